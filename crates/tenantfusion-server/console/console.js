// The console: log in, run SQL, list tables, watch a live query.
// Plain JavaScript, no build step and nothing fetched from elsewhere. It
// speaks the server's own HTTP API (POST /v1/login, POST /v1/sql) and
// WebSocket (GET /v1/live); values are put on the page as text, never as
// HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const LIVE_ROWS = 200;
let token = sessionStorage.getItem('tenantfusion-token');
let user = sessionStorage.getItem('tenantfusion-user');
let socket = null;

// base64 of UTF-8 text (btoa alone takes Latin-1 only).
function base64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

async function login(event) {
  event.preventDefault();
  $('login-error').textContent = '';
  const name = $('user').value;
  let answer;
  let body;
  try {
    answer = await fetch('/v1/login', {
      method: 'POST',
      headers: { Authorization: 'Basic ' + base64(name + ':' + $('password').value) },
    });
    body = await answer.json();
  } catch (err) {
    $('login-error').textContent = `cannot reach the server: ${err}`;
    return;
  }
  if (!answer.ok) {
    $('login-error').textContent = body.message;
    return;
  }
  token = body.token;
  user = body.user;
  sessionStorage.setItem('tenantfusion-token', token);
  sessionStorage.setItem('tenantfusion-user', user);
  $('password').value = '';
  show();
}

function logout() {
  stopLive();
  token = null;
  sessionStorage.clear();
  show();
}

function show() {
  const inside = Boolean(token);
  $('login').hidden = inside;
  $('main').hidden = !inside;
  $('logout').hidden = !inside;
  $('who').textContent = inside ? user : '';
  if (inside) listTables();
}

// One statement through POST /v1/sql; throws the server's {code, message}.
async function sql(text) {
  let answer;
  let body;
  try {
    answer = await fetch('/v1/sql', {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
      body: JSON.stringify({ sql: text }),
    });
    body = await answer.json();
  } catch (err) {
    throw { code: 'UNREACHABLE', message: `cannot reach the server: ${err}` };
  }
  if (answer.status === 401) logout();
  if (!answer.ok) throw body;
  return body;
}

function cell(row, value, tag = 'td') {
  const td = document.createElement(tag);
  if (value === null) {
    td.textContent = 'NULL';
    td.className = 'null';
  } else {
    td.textContent = typeof value === 'object' ? JSON.stringify(value) : String(value);
  }
  row.appendChild(td);
}

function header(table, columns) {
  table.replaceChildren();
  const row = table.createTHead().insertRow();
  for (const column of columns) cell(row, column.name, 'th');
  table.createTBody();
}

function rowOf(values) {
  const row = document.createElement('tr');
  for (const value of values) cell(row, value);
  row.dataset.key = JSON.stringify(values);
  return row;
}

async function run() {
  const text = $('sql').value;
  $('status').textContent = 'running…';
  $('status').className = '';
  try {
    const answer = await sql(text);
    header($('results'), answer.columns);
    const body = $('results').tBodies[0];
    for (const values of answer.rows) body.appendChild(rowOf(values));
    const what = answer.columns.length ? `${answer.row_count} row(s)` : `${answer.row_count} changed`;
    $('status').textContent = `${what} in ${answer.took_ms.toFixed(1)} ms`;
    if (/^\s*(create|drop|alter)\b/i.test(text)) listTables();
  } catch (err) {
    $('results').replaceChildren();
    $('status').textContent = `${err.code}: ${err.message}`;
    $('status').className = 'error';
  }
}

async function listTables() {
  try {
    const answer = await sql(
      "SELECT table_schema, table_name FROM information_schema.tables " +
      "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1, 2");
    const list = $('tables');
    list.replaceChildren();
    for (const [schema, name] of answer.rows) {
      const item = document.createElement('li');
      item.textContent = `${schema}.${name}`;
      item.onclick = () => { $('sql').value = `SELECT * FROM ${schema}.${name} LIMIT 100`; run(); };
      list.appendChild(item);
    }
  } catch (err) {
    $('tables').textContent = err.message;
  }
}

function startLive() {
  stopLive();
  const table = $('live-table');
  table.replaceChildren();
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  socket = new WebSocket(`${scheme}${location.host}/v1/live?token=${encodeURIComponent(token)}`);
  $('live-status').textContent = 'connecting…';
  $('live-status').className = '';
  $('live-start').disabled = true;
  $('live-stop').disabled = false;
  socket.onopen = () => {
    socket.send(JSON.stringify({ op: 'subscribe', id: 'console', sql: $('live-sql').value }));
  };
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = () => {
    $('live-start').disabled = false;
    $('live-stop').disabled = true;
    if (socket) $('live-status').textContent += ' (closed)';
    socket = null;
  };
}

function stopLive() {
  if (!socket) return;
  const closing = socket;
  socket = null;
  closing.close();
}

// Newest rows first; a delete takes away the first row equal to it.
function onEvent(event) {
  const table = $('live-table');
  const status = $('live-status');
  switch (event.event) {
    case 'snapshot':
      if (event.columns) header(table, event.columns);
      for (const values of event.rows) table.tBodies[0].prepend(rowOf(values));
      status.textContent = 'live';
      break;
    case 'insert':
      for (const values of event.rows) {
        const row = rowOf(values);
        row.className = 'new';
        table.tBodies[0].prepend(row);
        setTimeout(() => row.classList.remove('new'), 1000);
      }
      break;
    case 'delete':
      for (const values of event.rows) {
        const key = JSON.stringify(values);
        const row = [...table.tBodies[0].rows].find((r) => r.dataset.key === key);
        if (row) row.remove();
      }
      break;
    case 'lagged':
      status.textContent = `live (missed ${event.missed} event(s): reading too slowly)`;
      break;
    case 'error':
      status.textContent = `${event.code}: ${event.message}`;
      status.className = 'error';
      break;
  }
  const body = table.tBodies[0];
  while (body && body.rows.length > LIVE_ROWS) body.lastChild.remove();
}

$('login').addEventListener('submit', login);
$('logout').addEventListener('click', logout);
$('run').addEventListener('click', run);
$('sql').addEventListener('keydown', (e) => { if (e.key === 'Enter' && e.ctrlKey) run(); });
$('live-start').addEventListener('click', startLive);
$('live-stop').addEventListener('click', stopLive);
show();
