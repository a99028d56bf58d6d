// The status page: fetches /status every few seconds and writes the figures in place.
// Elements with data-field="a.b" show status.a.b; the tables are rebuilt from their objects.
// ?refresh=SECONDS sets the period (default 2).
"use strict";

const period = Math.max(0.2, Number(new URLSearchParams(location.search).get("refresh")) || 2);

function lookup(status, path) {
  return path.split(".").reduce((value, key) => (value == null ? undefined : value[key]), status);
}

function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + (d || h || m ? m + "m " : "") + (s % 60) + "s";
}

function fillTable(id, rows) {
  const body = document.getElementById(id);
  body.replaceChildren(...rows.map(cells => {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = String(cell);
      tr.append(td);
    }
    return tr;
  }));
}

function show(status) {
  for (const element of document.querySelectorAll("[data-field]")) {
    const value = lookup(status, element.dataset.field);
    element.textContent = element.dataset.format === "duration" ? duration(value) : String(value);
  }
  fillTable("profiles", Object.entries(status.profiles).sort());
  fillTable("members", status.cluster.members.map(m => [
    m.instance, m.version, m.state, m.connections, m.pending]));
  fillTable("errors", Object.entries(status.errors).sort());
  fillTable("not-allowed", Object.entries(status.auth.not_allowed).sort());
  // UTC, as every other time nea shows (logs, /connections): "15:04:05 UTC".
  document.getElementById("updated").textContent = new Date().toISOString().slice(11, 19) + " UTC";
}

async function refresh() {
  const problem = document.getElementById("problem");
  try {
    const response = await fetch("/status", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    show(await response.json());
    problem.hidden = true;
  } catch (error) {
    problem.textContent = "cannot reach the server: " + error.message;
    problem.hidden = false;
  } finally {
    setTimeout(refresh, period * 1000);
  }
}

refresh();
