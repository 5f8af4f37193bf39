//! Identifiers: cheap to clone (`Arc<str>` inside), hashed exactly like `str`
//! so maps keyed by them can be searched with a borrowed `&str` (no allocation).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

macro_rules! arc_str_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Creates the identifier from any string.
            pub fn new(value: impl AsRef<str>) -> Self {
                Self(Arc::from(value.as_ref()))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        // `Hash` of `Arc<str>` is the hash of the `str`, so `Borrow<str>` is sound.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(Arc::from(value))
            }
        }
    };
}

arc_str_id!(
    /// A namespace (schema), e.g. `app` in `app.orders`.
    NamespaceId
);
arc_str_id!(
    /// A table's name inside its namespace, e.g. `orders` in `app.orders`.
    TableName
);
arc_str_id!(
    /// An authenticated principal, e.g. `alice`.
    UserId
);
arc_str_id!(
    /// Where a table's durable data lives (a storage configuration's name).
    StorageId
);

/// A table's full identity: namespace and name.
///
/// ```
/// use tenantfusion_core::TableId;
/// let id = TableId::new("app", "orders");
/// assert_eq!(id.to_string(), "app.orders");
/// assert_eq!(id.table_name().as_str(), "orders");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TableId {
    namespace_id: NamespaceId,
    table_name: TableName,
}

impl TableId {
    /// Creates a table id from a namespace and a table name.
    pub fn new(namespace: impl Into<NamespaceId>, table: impl Into<TableName>) -> Self {
        Self {
            namespace_id: namespace.into(),
            table_name: table.into(),
        }
    }

    /// The namespace part.
    pub fn namespace_id(&self) -> &NamespaceId {
        &self.namespace_id
    }

    /// The table name part.
    pub fn table_name(&self) -> &TableName {
        &self.table_name
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace_id, self.table_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn ids_are_found_by_borrowed_str() {
        let mut map = HashMap::new();
        map.insert(UserId::new("alice"), 1);
        assert_eq!(map.get("alice"), Some(&1));
        assert_eq!(map.get("bob"), None);
    }

    #[test]
    fn clone_shares_the_string() {
        let a = NamespaceId::new("app");
        let b = a.clone();
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
    }
}
