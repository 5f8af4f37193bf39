//! Choosing a source for a request: explicit name, then load balancing among
//! sources of the requested kind, filtered by capabilities and health, then
//! the configured default.

use std::collections::HashMap;

use crate::error::{LiveError, Result};

use crate::source::{SourceKind, SourceSpec};

/// How to spread requests over the eligible sources of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Each in turn.
    #[default]
    RoundRobin,
    /// In proportion to `weight`, interleaved (smooth weighted round robin).
    WeightedRoundRobin,
    /// The one carrying the fewest topics.
    LeastLoaded,
    /// The lowest `priority`; the next one takes over while it is unhealthy.
    Priority,
}

/// How strictly a request's capabilities must be met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validation {
    /// Every required capability, or `CAPABILITY_MISMATCH`.
    #[default]
    Strict,
    /// The sources meeting the most requirements, with a warning when none
    /// meets all.
    Lenient,
    /// The kind only.
    Basic,
}

/// A source as the selector sees it at the moment of the request.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// What the source is.
    pub spec: &'a SourceSpec,
    /// Whether its circuit breaker lets work through.
    pub healthy: bool,
    /// Topics it carries now (for [`Strategy::LeastLoaded`]).
    pub load: usize,
}

/// What a request needs.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// A source asked for by name.
    pub name: Option<&'a str>,
    /// The kind asked for.
    pub kind: Option<SourceKind>,
    /// Topics the source must serve.
    pub topics: &'a [&'a str],
    /// Whether several topics must go in one subscribe request.
    pub batch_subscribe: bool,
}

/// The source chosen, and a warning when [`Validation::Lenient`] settled for
/// a partial match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The chosen source's name.
    pub name: String,
    /// Why the choice is not a full capability match, if it is not.
    pub warning: Option<String>,
}

/// Picks sources; keeps the state of the round-robin strategies.
///
/// ```
/// use tenantfusion_live::{Candidate, GeneratorConfig, GeneratorSource, Request, Selector, Source, Strategy};
/// let a = GeneratorSource::new(GeneratorConfig { name: "a".into(), ..Default::default() });
/// let b = GeneratorSource::new(GeneratorConfig { name: "b".into(), ..Default::default() });
/// let candidates = [
///     Candidate { spec: a.spec(), healthy: true, load: 0 },
///     Candidate { spec: b.spec(), healthy: true, load: 0 },
/// ];
/// let mut selector = Selector::new(Strategy::RoundRobin);
/// let picks: Vec<String> = (0..4)
///     .map(|_| selector.select(&Request::default(), &candidates).unwrap().name)
///     .collect();
/// assert_eq!(picks, ["a", "b", "a", "b"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Selector {
    strategy: Strategy,
    validation: Validation,
    default: Option<String>,
    turn: usize,
    /// Smooth weighted round robin's running weights, by source name.
    current: HashMap<String, i64>,
}

impl Selector {
    /// A selector with `strategy`, strict validation and no default source.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            ..Self::default()
        }
    }

    /// Sets how strictly capabilities are checked.
    pub fn with_validation(mut self, validation: Validation) -> Self {
        self.validation = validation;
        self
    }

    /// Sets the source used when a request names no source and no kind, or
    /// no source of its kind exists.
    pub fn with_default(mut self, name: impl Into<String>) -> Self {
        self.default = Some(name.into());
        self
    }

    /// Chooses a source for `request` among `candidates`.
    pub fn select(
        &mut self,
        request: &Request<'_>,
        candidates: &[Candidate<'_>],
    ) -> Result<Selection> {
        let known = || {
            let names: Vec<String> = candidates
                .iter()
                .map(|c| format!("{} ({})", c.spec.name, c.spec.kind))
                .collect();
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let by_name = |name: &str| candidates.iter().find(|c| c.spec.name == name);
        if let Some(name) = request.name {
            let candidate = by_name(name).ok_or_else(|| {
                LiveError::SourceNotFound(format!("no source named '{name}'; sources: {}", known()))
            })?;
            return self.settle(request, &[*candidate]);
        }
        let of_kind: Vec<Candidate<'_>> = candidates
            .iter()
            .filter(|c| request.kind.is_none_or(|k| c.spec.kind == k))
            .copied()
            .collect();
        if request.kind.is_some() && !of_kind.is_empty() {
            return self.settle(request, &of_kind);
        }
        match self.default.clone() {
            Some(default) => {
                let candidate = by_name(&default).ok_or_else(|| {
                    LiveError::SourceNotFound(format!(
                        "the default source '{default}' is not registered; sources: {}",
                        known()
                    ))
                })?;
                self.settle(request, &[*candidate])
            }
            None if request.kind.is_none() && !of_kind.is_empty() => self.settle(request, &of_kind),
            None => Err(LiveError::SourceNotFound(format!(
                "no source of kind {}; sources: {}",
                request.kind.map_or("any".to_string(), |k| k.to_string()),
                known()
            ))),
        }
    }

    /// Capability filter, health filter, then the strategy.
    fn settle(&mut self, request: &Request<'_>, pool: &[Candidate<'_>]) -> Result<Selection> {
        let scored: Vec<(Candidate<'_>, usize)> = pool
            .iter()
            .map(|c| (*c, unmet(request, c.spec).len()))
            .collect();
        let mut warning = None;
        let eligible: Vec<Candidate<'_>> = match self.validation {
            Validation::Basic => pool.to_vec(),
            Validation::Strict => {
                let full: Vec<_> = scored
                    .iter()
                    .filter(|(_, u)| *u == 0)
                    .map(|(c, _)| *c)
                    .collect();
                if full.is_empty() {
                    return Err(LiveError::CapabilityMismatch(mismatch(request, pool)));
                }
                full
            }
            Validation::Lenient => {
                let best = scored.iter().map(|(_, u)| *u).min().unwrap_or(0);
                if best > 0 {
                    warning = Some(mismatch(request, pool));
                }
                scored
                    .iter()
                    .filter(|(_, u)| *u == best)
                    .map(|(c, _)| *c)
                    .collect()
            }
        };
        let mut healthy: Vec<Candidate<'_>> =
            eligible.iter().filter(|c| c.healthy).copied().collect();
        if healthy.is_empty() {
            let names: Vec<&str> = eligible.iter().map(|c| c.spec.name.as_str()).collect();
            return Err(LiveError::NoHealthyProvider(format!(
                "every eligible source is unavailable (circuit open): {}",
                names.join(", ")
            )));
        }
        healthy.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        let chosen = match self.strategy {
            Strategy::RoundRobin => {
                let pick = healthy[self.turn % healthy.len()];
                self.turn = self.turn.wrapping_add(1);
                pick
            }
            Strategy::WeightedRoundRobin => self.smooth_weighted(&healthy),
            Strategy::LeastLoaded => *healthy.iter().min_by_key(|c| c.load).unwrap_or(&healthy[0]),
            Strategy::Priority => *healthy
                .iter()
                .min_by_key(|c| c.spec.priority)
                .unwrap_or(&healthy[0]),
        };
        Ok(Selection {
            name: chosen.spec.name.clone(),
            warning,
        })
    }

    /// nginx's smooth weighted round robin: every pick adds each weight to
    /// its running total and takes the largest, which then gives back the
    /// sum of weights. Picks follow the weights exactly and interleave.
    fn smooth_weighted<'a>(&mut self, pool: &[Candidate<'a>]) -> Candidate<'a> {
        let total: i64 = pool.iter().map(|c| i64::from(c.spec.weight)).sum();
        let mut best: Option<(Candidate<'a>, i64)> = None;
        for c in pool {
            let current = self.current.entry(c.spec.name.clone()).or_insert(0);
            *current += i64::from(c.spec.weight);
            if best.is_none_or(|(_, b)| *current > b) {
                best = Some((*c, *current));
            }
        }
        let chosen = best.map_or(pool[0], |(c, _)| c);
        if let Some(current) = self.current.get_mut(&chosen.spec.name) {
            *current -= total;
        }
        chosen
    }
}

/// The requirements of `request` that `spec` does not meet.
fn unmet(request: &Request<'_>, spec: &SourceSpec) -> Vec<String> {
    let caps = &spec.capabilities;
    let mut out = Vec::new();
    if request.batch_subscribe && !caps.batch_subscribe {
        out.push("batch subscribe".to_string());
    }
    for topic in request.topics {
        if !caps.serves(topic) {
            out.push(format!("topic '{topic}'"));
        }
    }
    out
}

fn mismatch(request: &Request<'_>, pool: &[Candidate<'_>]) -> String {
    let each: Vec<String> = pool
        .iter()
        .map(|c| {
            format!(
                "{} lacks {}",
                c.spec.name,
                unmet(request, c.spec).join(", ")
            )
        })
        .collect();
    format!("no source meets every requirement: {}", each.join("; "))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::generator::tick_schema;
    use crate::source::Capabilities;

    fn spec(name: &str, kind: SourceKind, weight: u32, priority: u32, prefix: &str) -> SourceSpec {
        SourceSpec {
            name: name.into(),
            kind,
            weight,
            priority,
            capabilities: Capabilities {
                max_topics_per_connection: Some(200),
                max_connections: None,
                batch_subscribe: kind != SourceKind::Rest,
                topic_prefixes: vec![prefix.into()],
                schema: Arc::clone(&tick_schema()),
                sequence_column: None,
                timestamp_column: None,
            },
        }
    }

    fn up(spec: &SourceSpec) -> Candidate<'_> {
        Candidate {
            spec,
            healthy: true,
            load: 0,
        }
    }

    #[test]
    fn weighted_round_robin_follows_the_weights_over_10000_picks() {
        let specs = [
            spec("a", SourceKind::WebSocket, 5, 0, ""),
            spec("b", SourceKind::WebSocket, 3, 0, ""),
            spec("c", SourceKind::WebSocket, 2, 0, ""),
        ];
        let pool: Vec<_> = specs.iter().map(up).collect();
        let mut selector = Selector::new(Strategy::WeightedRoundRobin);
        let request = Request {
            kind: Some(SourceKind::WebSocket),
            ..Request::default()
        };
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut first_ten = Vec::new();
        for i in 0..10_000 {
            let name = selector.select(&request, &pool).unwrap().name;
            if i < 10 {
                first_ten.push(name.clone());
            }
            *counts.entry(name).or_default() += 1;
        }
        assert_eq!(
            (counts["a"], counts["b"], counts["c"]),
            (5_000, 3_000, 2_000)
        );
        // Smooth: never five of a's picks in a row.
        assert!(
            !first_ten.windows(5).any(|w| w.iter().all(|n| n == "a")),
            "{first_ten:?}"
        );
    }

    #[test]
    fn priority_fails_over_while_the_primary_is_unhealthy() {
        let specs = [
            spec("primary", SourceKind::Stomp, 1, 0, ""),
            spec("backup", SourceKind::Stomp, 1, 1, ""),
        ];
        let mut pool: Vec<_> = specs.iter().map(up).collect();
        let mut selector = Selector::new(Strategy::Priority);
        let request = Request {
            kind: Some(SourceKind::Stomp),
            ..Request::default()
        };
        assert_eq!(selector.select(&request, &pool).unwrap().name, "primary");
        pool[0].healthy = false;
        assert_eq!(selector.select(&request, &pool).unwrap().name, "backup");
        pool[1].healthy = false;
        let err = selector.select(&request, &pool).unwrap_err();
        assert_eq!(err.code(), "NO_HEALTHY_PROVIDER");
        assert!(
            err.to_string().contains("primary") && err.to_string().contains("backup"),
            "{err}"
        );
    }

    #[test]
    fn least_loaded_and_explicit_names() {
        let specs = [
            spec("x", SourceKind::Rest, 1, 0, ""),
            spec("y", SourceKind::Rest, 1, 0, ""),
        ];
        let mut pool: Vec<_> = specs.iter().map(up).collect();
        pool[0].load = 10;
        let mut selector = Selector::new(Strategy::LeastLoaded);
        let request = Request {
            kind: Some(SourceKind::Rest),
            ..Request::default()
        };
        assert_eq!(selector.select(&request, &pool).unwrap().name, "y");
        let named = Request {
            name: Some("x"),
            ..Request::default()
        };
        assert_eq!(selector.select(&named, &pool).unwrap().name, "x");
        let missing = Request {
            name: Some("z"),
            ..Request::default()
        };
        let err = selector.select(&missing, &pool).unwrap_err();
        assert_eq!(err.code(), "PROVIDER_NOT_FOUND");
        assert!(err.to_string().contains("x (rest), y (rest)"), "{err}");
    }

    #[test]
    fn validation_levels_and_the_default_source() {
        let specs = [
            spec("crypto", SourceKind::WebSocket, 1, 0, "BTC"),
            spec("stocks", SourceKind::WebSocket, 1, 0, "AAPL"),
            spec("poll", SourceKind::Rest, 1, 0, ""),
        ];
        let pool: Vec<_> = specs.iter().map(up).collect();
        let both = ["BTC-USD", "AAPL"];
        let request = Request {
            kind: Some(SourceKind::WebSocket),
            topics: &both,
            ..Request::default()
        };
        let err = Selector::new(Strategy::RoundRobin)
            .select(&request, &pool)
            .unwrap_err();
        assert_eq!(err.code(), "CAPABILITY_MISMATCH");
        assert!(
            err.to_string().contains("crypto lacks topic 'AAPL'"),
            "{err}"
        );
        let lenient = Selector::new(Strategy::RoundRobin)
            .with_validation(Validation::Lenient)
            .select(&request, &pool)
            .unwrap();
        assert!(lenient.warning.is_some());
        let btc = ["BTC-USD"];
        let request = Request {
            kind: Some(SourceKind::WebSocket),
            topics: &btc,
            ..Request::default()
        };
        let strict = Selector::new(Strategy::RoundRobin)
            .select(&request, &pool)
            .unwrap();
        assert_eq!((strict.name.as_str(), strict.warning), ("crypto", None));
        // Basic looks at the kind only: round robin reaches "stocks" too.
        let mut basic = Selector::new(Strategy::RoundRobin).with_validation(Validation::Basic);
        let names: Vec<_> = (0..2)
            .map(|_| basic.select(&request, &pool).unwrap().name)
            .collect();
        assert_eq!(names, ["crypto", "stocks"]);
        // No source of the kind: the default, if configured.
        let stomp = Request {
            kind: Some(SourceKind::Stomp),
            ..Request::default()
        };
        let mut with_default = Selector::new(Strategy::RoundRobin).with_default("poll");
        assert_eq!(with_default.select(&stomp, &pool).unwrap().name, "poll");
        let err = Selector::new(Strategy::RoundRobin)
            .select(&stomp, &pool)
            .unwrap_err();
        assert_eq!(err.code(), "PROVIDER_NOT_FOUND");
    }
}
