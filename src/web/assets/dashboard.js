// The dashboard: polls this node's /cluster (every node's /status, gathered by the node)
// and /directory; the failure timeline is kept here, from the polls.
"use strict";

const POLL_MS = 500;
const DIRECTORY_MS = 1000;
const WINDOW_MS = 120000;
const COLORS = { Active: "#22c55e", Failed: "#ef4444", Recovering: "#f59e0b", down: "#94a3b8" };
const started = Date.now();
const history = {};   // node id -> [{ t, state }]
const last = {};      // node id -> last state seen
const events = [];    // { t, text, kind }

function clock(t) {
  return ((t - started) / 1000).toFixed(1) + " s";
}

function stateOf(report) {
  return report.status ? report.status.state : "down";
}

function note(t, id, from, to) {
  let text;
  let kind = to;
  if (to === "Failed") text = "node " + id + " entered FAILED";
  else if (to === "Recovering") text = "node " + id + " is recovering";
  else if (to === "Active" && from !== undefined) text = "node " + id + " is back (Active)";
  else if (to === "Active") text = "node " + id + " is Active";
  else { text = "node " + id + " does not answer"; kind = "unreachable"; }
  events.unshift({ t, text, kind });
  events.length = Math.min(events.length, 200);
}

function render(cluster) {
  const now = Date.now();
  const nodes = cluster.nodes;
  byId("from").textContent = cluster.from;
  for (const n of nodes) {
    const s = stateOf(n);
    (history[n.id] = history[n.id] || []).push({ t: now, state: s });
    while (history[n.id].length > 2 && history[n.id][1].t < now - WINDOW_MS) history[n.id].shift();
    if (last[n.id] !== s) note(now, n.id, last[n.id], s);
    last[n.id] = s;
  }
  const up = nodes.filter((n) => n.status);
  const active = up.filter((n) => n.status.state === "Active");
  // The coordinator and epoch as the Active nodes name them (the highest epoch wins).
  const named = active.map((n) => n.status).sort((a, b) => b.epoch - a.epoch)[0];
  // The consensus leader as the highest term names it.
  const terms = up.map((n) => n.status.store).filter((s) => s && s.leader).sort((a, b) => b.term - a.term);
  const coordinator = named ? named.coordinator : null;
  byId("coordinator").textContent = coordinator ? "node " + coordinator : "none";
  byId("epoch").textContent = named ? named.epoch : "-";
  byId("leader").textContent = terms.length ? "node " + terms[0].leader + " (term " + terms[0].term + ")" : "none";
  byId("active").textContent = active.length + " / " + nodes.length;
  byId("served").textContent = up.reduce((a, n) => Math.max(a, n.status.request_log || 0), 0);
  renderSharing(now, up);

  byId("nodes").replaceChildren(...nodes.map((n) => {
    const s = n.status;
    const state = stateOf(n);
    const roles = [];
    if (s && coordinator === n.id) roles.push("coordinator");
    if (s && s.store && s.store.leader === n.id) roles.push("consensus leader");
    const rows = s ? [
      ["epoch", s.epoch], ["coordinator", s.coordinator ? "node " + s.coordinator : "none"],
      ["load", Number(s.load).toFixed(3) + " s"], ["served", s.served],
      ["in flight", s.in_flight + " + " + s.queued + " queued"], ["quorum", s.quorum ? "yes" : "no"],
      ["failures", s.failures], ["raft term", s.store ? s.store.term : "-"],
    ] : [["status", n.error || "no answer"]];
    return el("article", { class: "node" + (roles.includes("coordinator") ? " coord" : ""),
                           "data-node": String(n.id), "data-state": state, "aria-label": "node " + n.id },
      el("h3", {}, "node " + n.id, el("span", { class: "badge " + (s ? state : "unreachable"),
                                               text: s ? state : "unreachable" })),
      el("div", { class: "roles", text: roles.join(" · ") }),
      el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })])),
      el("div", { class: "meta mono", text: n.http }));
  }));

  const width = 1000, row = 22, label = 70;
  const strip = svg("svg", { class: "strip", viewBox: "0 0 " + width + " " + (nodes.length * row + 18),
                             role: "img", "aria-label": "node states over the last two minutes" });
  nodes.forEach((n, i) => {
    const y = i * row;
    const text = svg("text", { x: 0, y: y + 15, "font-size": 13, fill: "#334155" });
    text.textContent = "node " + n.id;
    strip.append(text);
    const h = history[n.id];
    h.forEach((p, j) => {
      const end = j + 1 < h.length ? h[j + 1].t : now;
      const x0 = label + Math.max(0, (p.t - (now - WINDOW_MS)) / WINDOW_MS) * (width - label);
      const x1 = label + ((end - (now - WINDOW_MS)) / WINDOW_MS) * (width - label);
      if (x1 > x0) strip.append(svg("rect", { x: x0, y: y + 3, width: Math.max(x1 - x0, 1), height: row - 6,
                                              fill: COLORS[p.state] || COLORS.down }));
    });
  });
  for (let s = 0; s <= 120; s += 20) {
    const x = label + (1 - s / 120) * (width - label);
    const tick = svg("text", { x: Math.min(x, width - 30), y: nodes.length * row + 14, "font-size": 11, fill: "#64748b" });
    tick.textContent = s ? "-" + s + " s" : "now";
    strip.append(tick);
  }
  byId("strips").replaceChildren(strip);
  byId("events").replaceChildren(...events.map((e) =>
    el("li", { "data-kind": e.kind }, el("span", { class: "t", text: clock(e.t) }), e.text)));
}

// Phase 2's figures: the ledger's (from the node that has applied the most), and the view
// answers every node's desk gave (summed; a node that does not answer keeps its last count).
const spent = [];     // { t, views } samples of the ledger's views spent, for the rate
const defaults = {};  // node id -> default images its desk gave
function renderSharing(now, up) {
  const stores = up.map((n) => n.status.store).filter((s) => s);
  if (!stores.length) return;
  const newest = stores.reduce((a, s) => ((s.applied || 0) > (a.applied || 0) ? s : a));
  for (const n of up) if (n.status.desk) defaults[n.id] = n.status.desk.views_default;
  spent.push({ t: now, views: newest.views_spent });
  while (spent.length > 2 && spent[1].t < now - 3000) spent.shift();
  const first = spent[0];
  const rate = now > first.t ? (newest.views_spent - first.views) / ((now - first.t) / 1000) : 0;
  const set = (id, v) => { byId(id).textContent = String(v); };
  set("views-rate", Math.max(0, rate).toFixed(0));
  set("views-spent", newest.views_spent);
  set("views-default", Object.values(defaults).reduce((a, b) => a + b, 0));
  const letters = newest.letters_waiting;
  set("mailboxes", newest.mailboxes_waiting + (letters ? " (" + letters + (letters === 1 ? " letter)" : " letters)") : ""));
  set("images", newest.images);
  set("term", Math.max(...stores.map((s) => s.term)));
}

function renderDirectory(users) {
  byId("users").textContent = users.filter((u) => u.online).length + " / " + users.length;
  const box = byId("directory");
  if (!users.length) { box.replaceChildren(el("p", { class: "empty", text: "No users registered." })); return; }
  const head = el("tr", {}, ...["user", "", "address", "last seen", "shares"].map((h) => el("th", { scope: "col", text: h })));
  const rows = users.map((u) => el("tr", { "data-user": u.user },
    el("td", { text: u.user }),
    el("td", {}, el("span", { class: "badge " + (u.online ? "online" : ""), text: u.online ? "online" : "offline" })),
    el("td", { class: "mono", text: u.addr || "-" }),
    el("td", { text: u.last_seen ? new Date(u.last_seen).toLocaleTimeString() : "-" }),
    el("td", { text: (u.shared || []).map((s) => s.name).join(", ") || "-" })));
  box.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
}

async function loop(path, every, use) {
  const live = byId("live");
  for (;;) {
    const t = Date.now();
    try {
      const answer = await fetch(path, { cache: "no-store", signal: AbortSignal.timeout(3000) });
      if (answer.ok) {
        use(await answer.json());
        live.className = "live on";
        live.textContent = "live";
      }
    } catch (_) {
      live.className = "live";
      live.textContent = "this node does not answer";
    }
    await new Promise((r) => setTimeout(r, Math.max(50, every - (Date.now() - t))));
  }
}

loop("/cluster", POLL_MS, render);
loop("/directory", DIRECTORY_MS, renderDirectory);
