// The chat page: joins the chat profile over WebSocket (/ws?profile=chat) with a name,
// shows the history it is sent on joining and new lines live, and after a lost connection
// reconnects with backoff and asks "since" the last line it has for exactly what it missed.
// With a sign-in token (the URL fragment's #token=..., or the token field) it joins with it
// (?token= on the WebSocket URL), and the server names it after the token's identity.
//
// Two parts: the protocol, pure functions from a state value and a frame to the next state
// and the frames to send (no DOM, no socket, no clock: the tests call them in a blank
// page); then the page, which owns the socket, the timers and the DOM.
"use strict";

// ---- the protocol ----

/** Lines kept on the page; older ones are dropped (and not taken back from a replay). */
const MAX_LINES = 500;

/**
 * A page's chat state. A line is {key, id, time, kind, from, text, own, unconfirmed}:
 * id is the store's (null for a line that went out unsaved, a presence, or one of ours
 * or a live broadcast whose id is not known yet: those are "unconfirmed" and take the
 * id of the stored line that matches them when it is replayed).
 * synced: every stored line up to this id is on the page (null before the first join).
 * pending: what the next history_end answers, in order ("join" or "since").
 */
function chatState(name) {
  return {name, joined: false, lines: [], synced: null, resume: null, floor: 0,
          pending: [], nextKey: 1, error: null};
}

/** What a name may be, by the server's rule (nea.wire.codec.NICK_PATTERN). */
const NAME_HINT = "Up to 32 characters: ASCII letters, digits, _ . and - (no spaces, no accents).";

/** Why the server would refuse `name`, for a person; null when it takes it. */
function nameProblem(name) {
  if (name.length === 0) return `Choose a name. ${NAME_HINT}`;
  const refused = [...new Set([...name].filter(c => !/^[A-Za-z0-9_.-]$/.test(c)))];
  if (refused.length > 0) {
    const shown = refused.map(c => c === " " ? "spaces" : `"${c}"`).join(", ");
    return `${shown}: not allowed in a name. ${NAME_HINT}`;
  }
  if (name.length > 32) return `${name.length} characters: too long. ${NAME_HINT}`;
  return null;
}

/** A new socket is open: say the name; after the join history, resume from `synced`. */
function opened(state) {
  return {state: {...state, joined: false, pending: [], resume: state.synced},
          send: [{type: "nick", payload: state.name}]};
}

/** The frame that asks for the stored lines the page lacks, or null before a first join. */
function missingSince(state) {
  return state.synced === null ? null : {type: "since", payload: state.synced};
}

/** The user says `text` at `time`: shown at once (the server does not echo it back). */
function said(state, text, time) {
  const line = {id: null, time, kind: "chat", from: state.name, text, own: true,
                unconfirmed: true};
  return {state: appendLine({...state, error: null}, line),
          send: [{type: "chat", payload: text}]};
}

/** The next state and the frames to send after the server's `frame`. */
function applyFrame(state, frame) {
  const payload = frame.payload;
  const none = {state, send: []};
  switch (frame.type) {
    case "nick":
      if (state.error !== null && TOKEN_REFUSED.includes(state.error.code)) return none;
      return {state: {...state, name: payload, joined: true, pending: ["join"], error: null},
              send: []};
    case "history":
      return {state: addStored(state, storedLine(payload)), send: []};
    case "history_end":
      return historyEnd(state, payload);
    case "chat":
      if (payload.id == null) {
        return {state: appendLine(state, {id: null, time: payload.time || null, kind: "chat",
                                          from: payload.from, text: payload.text}), send: []};
      }
      return {state: liveStored(state, storedLine({...payload, kind: "chat"})), send: []};
    case "broadcast_line":
      return {state: liveStored(state, storedLine({...payload, kind: "broadcast"})), send: []};
    case "broadcast":
      return liveBroadcast(state, String(payload));
    case "presence":
      return {state: appendLine(state, {id: null, time: null, kind: "presence",
                                        from: payload.name, text: payload.event}), send: []};
    case "gap":
      return gapFrame(state, payload);
    case "error":
      return errorFrame(state, payload);
    default:
      return none;  // dates, status replies: nothing the page shows
  }
}

function storedLine(p) {
  return {id: p.id, time: p.time, kind: p.kind, from: p.kind === "broadcast" ? null : p.from,
          text: p.text};
}

function historyEnd(state, payload) {
  const [answers, ...pending] = state.pending;
  const lastId = Math.max(payload.last_id || 0, state.synced || 0);
  if (answers === "since") {
    if (payload.more) {
      const next = {...state, synced: lastId};
      return {state: next, send: [missingSince(next)]};
    }
    // Lines that came live meanwhile are newer than the replay: nothing is missing below.
    return {state: {...state, synced: Math.max(lastId, maxId(state)), pending}, send: []};
  }
  if (state.resume === null) {  // a first join: the history is where the page starts
    return {state: {...state, synced: Math.max(lastId, maxId(state)), pending}, send: []};
  }
  // A rejoin: the join history holds only the last lines; ask for all since the page's last.
  const next = {...state, synced: state.resume, resume: null, pending: [...pending, "since"]};
  return {state: next, send: [missingSince(next)]};
}

/** A stored line pushed live: while nothing is being replayed it is the newest one. */
function liveStored(state, line) {
  const next = addStored(state, line);
  const caughtUp = state.pending.length === 0 && state.synced !== null;
  return caughtUp ? {...next, synced: Math.max(state.synced, line.id)} : next;
}

/** A live broadcast carries no id: show it, and ask "since" for its stored form. */
function liveBroadcast(state, text) {
  return askSince(state, appendLine(state, {id: null, time: null, kind: "broadcast",
                                            from: null, text, unconfirmed: true}));
}

/** The server lost the cluster meanwhile: say so, and ask "since" for what the store has. */
function gapFrame(state, payload) {
  return askSince(state, appendLine(state, {
    id: null, time: payload.until, kind: "gap", from: null,
    text: `lines said since ${payload.since} may be missing`}));
}

/** `next`, asking "since" the page's last line unless a replay is on its way (or no join). */
function askSince(state, next) {
  if (state.synced === null || state.pending.includes("since")) {
    return {state: next, send: []};
  }
  return {state: {...next, pending: [...next.pending, "since"]}, send: [missingSince(next)]};
}

/** The server's refusals of a sign-in token: the page does not join (as anyone) then. */
const TOKEN_REFUSED = ["auth_unavailable", "bad_token", "token_too_large", "bad_signature",
                       "bad_algorithm", "expired_token", "token_not_yet_valid",
                       "wrong_audience", "token_expired"];
/** Errors after which the page asks for a name (or a token) again. */
const NAME_REFUSED = ["bad_nick", "not_allowed", ...TOKEN_REFUSED];

function errorFrame(state, payload) {
  const error = {code: payload.code, message: payload.message};
  if (NAME_REFUSED.includes(payload.code)) {
    return {state: {...state, joined: false, error}, send: []};
  }
  if (payload.code === "history_unavailable") {
    // No replay is coming: go on live; what was missed cannot be recovered now.
    const [, ...pending] = state.pending;
    return {state: {...state, pending, resume: null, synced: Math.max(state.synced || 0, maxId(state)),
                    error}, send: []};
  }
  return {state: {...state, error}, send: []};
}

function maxId(state) {
  return state.lines.reduce((most, line) => (line.id === null ? most : Math.max(most, line.id)), 0);
}

/** Adds a stored line once, in id order; it replaces the unconfirmed line it is. */
function addStored(state, line) {
  if (line.id <= state.floor || state.lines.some(l => l.id === line.id)) {
    return state;
  }
  const match = state.lines.findIndex(l => l.unconfirmed && l.kind === line.kind &&
                                            l.from === line.from && l.text === line.text);
  let lines = state.lines, key = state.nextKey, nextKey = state.nextKey + 1;
  const own = line.kind === "chat" && line.from === state.name;
  if (match >= 0) {
    key = lines[match].key;
    nextKey = state.nextKey;
    lines = [...lines.slice(0, match), ...lines.slice(match + 1)];
  }
  return trimmed({...state, nextKey, lines: insertById(lines, {...line, key, own})});
}

/** A line without an id goes last. */
function appendLine(state, line) {
  const added = {own: false, unconfirmed: false, ...line, key: state.nextKey};
  return trimmed({...state, nextKey: state.nextKey + 1, lines: [...state.lines, added]});
}

/** Inserts `line` after every stored line of a lower id; a line without an id stays after
 * the stored line it followed. */
function insertById(lines, line) {
  let at = lines.length;
  for (let j = lines.length - 1; j >= 0; j--) {
    if (lines[j].id === null) continue;
    if (lines[j].id < line.id) break;
    at = j;
  }
  return [...lines.slice(0, at), line, ...lines.slice(at)];
}

function trimmed(state) {
  const extra = state.lines.length - MAX_LINES;
  if (extra <= 0) return state;
  const dropped = state.lines.slice(0, extra);
  const floor = dropped.reduce((most, l) => (l.id === null ? most : Math.max(most, l.id)),
                               state.floor);
  return {...state, floor, lines: state.lines.slice(extra)};
}

/** Seconds before reconnect attempt `attempt` (0, 1, ...): 0.5 s doubling up to 15 s,
 * the upper half of it drawn at random (`random` in [0, 1)) so that pages cut off
 * together do not come back together. */
function backoffDelay(attempt, random) {
  const ceiling = Math.min(15, 0.5 * 2 ** Math.min(attempt, 10));
  return ceiling / 2 + random * ceiling / 2;
}

// ---- the page ----

/** A connection that stayed up this long resets the backoff. */
const STABLE_SECONDS = 10;

function startPage() {
  const $ = id => document.getElementById(id);
  const list = $("lines"), connection = $("connection"), notice = $("notice");
  const nameForm = $("name-form"), nameInput = $("name"), sayForm = $("say-form");
  const textInput = $("text"), sendButton = $("send"), tokenInput = $("token");
  const elements = new Map();  // line key -> its <li>
  let state = null, socket = null, attempt = 0, openedAt = null, timer = null;
  let named = false;  // a name was accepted once: from then on the page rejoins with it

  function showConnection(kind, text) {
    connection.dataset.state = kind;
    connection.textContent = text;
    sendButton.disabled = kind !== "connected";
  }

  function step(result) {
    state = result.state;
    for (const frame of result.send) socket.send(JSON.stringify(frame));
    render();
  }

  function render() {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const keys = new Set(state.lines.map(line => line.key));
    for (const [key, element] of elements) {
      if (!keys.has(key)) { element.remove(); elements.delete(key); }
    }
    let previous = null;
    for (const line of state.lines) {
      let element = elements.get(line.key);
      if (!element) { element = lineElement(line); elements.set(line.key, element); }
      element.dataset.id = line.id === null ? "" : String(line.id);
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (element !== expected) list.insertBefore(element, expected);
      previous = element;
    }
    if (atBottom) list.scrollTop = list.scrollHeight;
    $("me").textContent = state.name;
    const badName = state.error !== null && NAME_REFUSED.includes(state.error.code);
    named = (named || state.joined) && !badName;
    nameForm.hidden = named;
    sayForm.hidden = !named;
    notice.hidden = state.error === null;
    notice.textContent = state.error ? `${state.error.code}: ${state.error.message}` : "";
    if (state.joined && document.activeElement === nameInput) textInput.focus();
    if (badName) nameInput.focus();
  }

  function lineElement(line) {
    const item = document.createElement("li");
    item.dataset.kind = line.kind;
    if (line.own) item.classList.add("own");
    const when = document.createElement("time");
    if (line.time) {
      when.dateTime = line.time;
      const date = new Date(line.time);
      when.textContent = `${String(date.getHours()).padStart(2, "0")}:` +
                         `${String(date.getMinutes()).padStart(2, "0")}`;
    }
    const from = document.createElement("span");
    from.className = "from";
    from.textContent = line.kind === "chat" ? line.from : "*";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = line.kind === "presence" ? `${line.from} ${line.text}` : line.text;
    item.append(when, from, text);
    return item;
  }

  function connect() {
    clearTimeout(timer);
    showConnection("connecting", "connecting…");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const token = tokenInput.value.trim();
    const signIn = token ? `&token=${encodeURIComponent(token)}` : "";
    socket = new WebSocket(`${scheme}//${location.host}/ws?profile=chat${signIn}`);
    openedAt = null;
    socket.onopen = () => {
      openedAt = Date.now();
      showConnection("connected", "connected");
      step(opened(state));
    };
    socket.onmessage = event => {
      let result;
      try {
        result = applyFrame(state, JSON.parse(event.data));
      } catch (error) {  // not a frame of this protocol: nothing to show
        console.warn("chat: ignored a message", error);
        return;
      }
      step(result);
    };
    socket.onclose = () => {
      socket = null;
      if (openedAt !== null && Date.now() - openedAt >= STABLE_SECONDS * 1000) attempt = 0;
      state = {...state, joined: false};
      waitToReconnect();
    };
  }

  function waitToReconnect() {
    if (!navigator.onLine) {
      showConnection("offline", "offline: waiting for the network");
      return;
    }
    const due = Date.now() + backoffDelay(attempt++, Math.random()) * 1000;
    const tick = () => {
      const left = due - Date.now();
      if (left <= 0) return connect();
      showConnection("reconnecting", `reconnecting in ${Math.ceil(left / 1000)} s`);
      timer = setTimeout(tick, left % 1000 || 1000);  // when the whole seconds left change
    };
    tick();
  }

  window.addEventListener("online", () => {
    if (socket === null && state !== null) { attempt = 0; connect(); }
  });
  window.addEventListener("offline", () => {
    if (socket === null && state !== null) {
      clearTimeout(timer);
      showConnection("offline", "offline: waiting for the network");
    }
  });

  // The server's rule is checked as the name is typed: a refused name is not sent, and
  // the browser shows the hint where a form shows what is wrong with a field.
  const nameHelp = $("name-help");
  function checkName() {
    const problem = nameInput.value.trim() ? nameProblem(nameInput.value.trim()) : null;
    nameInput.setCustomValidity(problem || "");
    nameHelp.textContent = problem || NAME_HINT;
    nameHelp.dataset.state = problem ? "refused" : "";
    return problem;
  }
  nameInput.addEventListener("input", checkName);

  nameForm.addEventListener("submit", event => {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!name || checkName()) return;
    state = state === null ? chatState(name) : {...state, name, error: null};
    if (socket !== null && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({type: "nick", payload: name}));
    } else if (socket === null) {
      attempt = 0;
      connect();
    }
  });

  sayForm.addEventListener("submit", event => {
    event.preventDefault();
    const text = textInput.value.trim();
    if (!text || socket === null || socket.readyState !== WebSocket.OPEN || !state.joined) return;
    step(said(state, text, new Date().toISOString()));
    textInput.value = "";
    textInput.focus();
  });

  showConnection("idle", "not connected: choose a name");
  // An application signs its user in with /chat#token=...: the page joins at once (the
  // server names it), and the token leaves the address bar (no bookmark or history keeps it).
  const signedIn = new URLSearchParams(location.hash.slice(1)).get("token");
  if (signedIn) {
    tokenInput.value = signedIn;
    history.replaceState(null, "", location.pathname + location.search);
    state = chatState("me");
    connect();
  }
}

// The page binds to its own markup only; loaded elsewhere (the tests' blank page) the
// protocol functions above are all it defines.
if (document.getElementById("chat-app")) startPage();
