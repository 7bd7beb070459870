// The room page: one websocket, reconnecting with the id of the last message
// seen so that the server sends exactly the messages missed meanwhile.
// Every text goes into the page through textContent, never as HTML.
(function () {
  "use strict";

  const room = JSON.parse(document.getElementById("room-name").textContent);
  const log = document.getElementById("log");
  const input = document.getElementById("input");
  const form = document.getElementById("form");
  const statusLine = document.getElementById("status");

  let socket = null;
  let lastId = null;       // highest stream id shown, as [ms, seq]
  const shown = new Set(); // ids shown: live copies of two senders may cross
  let retryDelayMs = 500;
  const maxRetryDelayMs = 10000;
  // Messages sent and not yet confirmed, by the "ref" they were sent with:
  // one the server refuses goes back into the input, so no typed text is lost.
  const unconfirmed = new Map();
  let nextRef = 1;

  function parseId(text) {
    const match = /^(\d+)-(\d+)$/.exec(String(text));
    return match ? [Number(match[1]), Number(match[2])] : null;
  }

  function isAfter(a, b) {
    return b === null || a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
  }

  function addLine(text, className, meta) {
    const line = document.createElement("div");
    if (className) line.className = className;
    if (meta) {
      const span = document.createElement("span");
      span.className = "meta";
      span.textContent = meta;
      line.appendChild(span);
    }
    line.appendChild(document.createTextNode(text));
    log.appendChild(line);
    log.scrollTop = log.scrollHeight;
  }

  // Messages recorded at the same moment by two server processes can arrive
  // in the opposite order of their ids: each goes in its place, none is
  // dropped for being older than the newest one shown.
  function showMessage(frame) {
    const id = parseId(frame.id);
    if (id === null || shown.has(frame.id)) return;
    shown.add(frame.id);
    if (isAfter(id, lastId)) lastId = id;
    const time = new Date(frame.time);
    const meta = isNaN(time) ? "" : time.toLocaleTimeString();
    const line = document.createElement("div");
    line.className = "message";
    line.dataset.id = frame.id;
    const span = document.createElement("span");
    span.className = "meta";
    span.textContent = meta;
    line.appendChild(span);
    line.appendChild(document.createTextNode(String(frame.message)));
    let next = null;  // the first message shown with a later id
    for (let node = log.lastElementChild; node !== null; node = node.previousElementSibling) {
      const other = node.dataset.id ? parseId(node.dataset.id) : null;
      if (other === null) continue;
      if (isAfter(id, other)) break;
      next = node;
    }
    log.insertBefore(line, next);
    log.scrollTop = log.scrollHeight;
  }

  function socketUrl() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    let url = scheme + window.location.host + "/ws/" + encodeURIComponent(room) + "/";
    if (lastId !== null) url += "?after=" + lastId[0] + "-" + lastId[1];
    return url;
  }

  function connect() {
    socket = new WebSocket(socketUrl());
    socket.onopen = function () {
      statusLine.textContent = "connected";
      retryDelayMs = 500;
    };
    socket.onmessage = function (event) {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame.gap) {
        addLine("Some messages were missed: " + String(frame.error), "error");
      } else if (typeof frame.error === "string") {
        addLine(frame.error, "error");
        giveBack(frame.ref);
      } else if (typeof frame.message === "string") {
        showMessage(frame);
      } else if (frame.sent !== undefined) {
        unconfirmed.delete(frame.sent);
      }
    };
    socket.onclose = function () {
      statusLine.textContent = "disconnected; reconnecting…";
      // Sent but never confirmed: maybe recorded, maybe not. Shown, not resent.
      for (const text of unconfirmed.values()) {
        addLine("Not confirmed before the connection closed: " + text, "error");
      }
      unconfirmed.clear();
      window.setTimeout(connect, retryDelayMs);
      retryDelayMs = Math.min(retryDelayMs * 2, maxRetryDelayMs);
    };
  }

  // A refused message's text goes back into the input, unless the user has
  // started typing another one (then it stays in the log's error line).
  function giveBack(ref) {
    if (!unconfirmed.has(ref)) return;
    const text = unconfirmed.get(ref);
    unconfirmed.delete(ref);
    if (input.value === "") {
      input.value = text;
    } else {
      addLine("Not sent: " + text, "error");
    }
  }

  // Enter in the input submits the form, like a click on the button.
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = input.value;
    if (!text.trim() || socket === null || socket.readyState !== WebSocket.OPEN) return;
    const ref = nextRef++;
    unconfirmed.set(ref, text);
    socket.send(JSON.stringify({ message: text, ref: ref }));
    input.value = "";
    input.focus();
  });

  connect();
})();
