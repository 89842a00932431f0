// The gallery: everything private comes from the peer's local API (/api/*), the same API
// the `peer` CLI calls, with the login token from the page's URL. Live: /api/events.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const state = { me: null, previews: {}, previewKeys: {}, viewSeq: 0, names: {}, own: [],
                receipts: {}, receiptsKnown: false, confirming: null };

// --- the API -------------------------------------------------------------------------------

async function api(path, body, raw) {
  const init = { headers: { Authorization: "Bearer " + TOKEN } };
  if (raw !== undefined) {
    init.method = "POST";
    init.body = raw;
    init.headers["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    init.method = "POST";
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const answer = await fetch(path, init);
  const text = await answer.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch (_) { value = { error: text }; }
  if (!answer.ok) {
    const err = new Error((value && value.error) || answer.statusText);
    err.status = answer.status;
    throw err;
  }
  return value;
}

function fileUrl(params) {
  const q = new URLSearchParams(params);
  q.set("token", TOKEN);
  return "/api/file?" + q.toString();
}

function baseName(path) {
  return String(path).split(/[\\/]/).pop();
}

// --- small DOM helpers (el, byId, plural and svg are in web.js) ----------------------------

// Brings `box`'s children in line with `items`, in place: each child is keyed by `key(item)`,
// rebuilt only when its item changed (as JSON), moved only when out of order. A click, a
// typed number or the focus on an unchanged item is never lost to a refresh. `empty` is the
// line shown when there is nothing.
function showKeyed(box, items, key, build, empty) {
  const old = new Map();
  for (const node of [...box.children]) {
    if (node.dataset.key === undefined) node.remove();
    else old.set(node.dataset.key, node);
  }
  if (!items.length) {
    for (const node of old.values()) node.remove();
    if (empty) box.append(el("p", { class: "empty", text: empty }));
    return;
  }
  let at = 0;
  for (const item of items) {
    const k = String(key(item));
    const sig = JSON.stringify(item);
    let node = old.get(k);
    if (!node || node.dataset.sig !== sig) {
      const fresh = build(item);
      fresh.dataset.key = k;
      fresh.dataset.sig = sig;
      if (node) node.replaceWith(fresh);
      node = fresh;
    }
    old.delete(k);
    if (box.children[at] !== node) box.insertBefore(node, box.children[at] || null);
    at += 1;
  }
  for (const node of old.values()) node.remove();
}

function setError(id, message) {
  byId(id).textContent = message || "";
}

// An image's name for messages: the name the folder or the directory knows it by.
function nameOf(id) {
  return state.names[id] || id.slice(0, 12);
}

// --- sections ------------------------------------------------------------------------------

function renderImages(images) {
  for (const i of images) state.names[i.id] = i.name;
  const own = images.filter((i) => i.views_left === null);
  const copies = images.filter((i) => i.views_left !== null);
  state.own = own;
  showKeyed(byId("own-list"), own.map((i) => ({ id: i.id, name: i.name })), (i) => i.id,
    (i) => el("div", { class: "tile", "data-own": i.id },
      el("img", { src: fileUrl({ kind: "preview", id: i.id }), alt: "Preview of " + i.name }),
      el("span", { class: "name", text: i.name, title: i.name }),
      el("span", { class: "meta mono", text: i.id.slice(0, 12) }),
      viewButton(i)),
    "Nothing shared yet: share a photo.");
  showKeyed(byId("copies-list"),
    copies.map((i) => ({ id: i.id, name: i.name, owner: i.owner, left: i.views_left })),
    (i) => i.id, copyTile, "No copies yet: request views from a peer online.");
  renderOwnerControls();
}

// A received copy: the owner's preview (the peer fetches it if it never saved one) and the
// views left, as the folder knows them.
function copyTile(i) {
  const placeholder = el("div", { class: "ph", text: i.name + ": no preview (" + i.owner + " is offline)", hidden: true });
  const img = el("img", { src: fileUrl({ kind: "copy-preview", id: i.id }),
                          alt: "Preview of " + i.name + " from " + i.owner });
  img.addEventListener("error", () => { img.hidden = true; placeholder.hidden = false; });
  return el("div", { class: "tile", "data-copy": i.id }, img, placeholder,
    el("span", { class: "name", text: i.name, title: i.name }),
    el("span", { class: "meta" }, "from " + i.owner + " · ",
      el("span", { class: i.left > 0 ? "badge online" : "badge zero", "data-views-left": String(i.left),
                   text: plural(i.left, "view", "views") + " left" })),
    viewButton(i));
}

function viewButton(image) {
  return el("button", { type: "button", "data-action": "view", "data-image": image.id,
                        "aria-label": "View " + image.name, onclick: () => view(image) }, "View");
}

async function view(image) {
  const viewer = byId("viewer");
  const caption = byId("viewer-caption");
  viewer.hidden = false;
  caption.className = "";
  caption.textContent = "Asking the cloud for a view of " + image.name + "...";
  try {
    const result = await api("/api/view", { image: image.id });
    const img = byId("viewer-img");
    state.viewSeq += 1;
    img.src = fileUrl({ kind: "view", file: baseName(result.out), n: state.viewSeq });
    img.dataset.shown = result.shown;
    if (result.shown === "default") {
      img.alt = "The default image: no views left of " + image.name;
      caption.className = "default";
      caption.textContent = "No views left of " + image.name + ": this is the default image." +
        (result.reason ? " (" + result.reason + ")" : "");
    } else {
      img.alt = image.name;
      caption.textContent = result.views_left === null || result.views_left === undefined
        ? image.name + " (your own image)"
        : image.name + " from " + image.owner + ": " + plural(result.views_left, "view", "views") + " left";
    }
  } catch (e) {
    caption.className = "default";
    caption.textContent = "Could not view " + image.name + ": " + e.message;
  }
  refresh();
}

function renderRequests(requests) {
  for (const q of requests) if (q.name) state.names[q.image] = q.name;
  const rows = requests.slice().reverse().map((q) => ({
    id: q.id, incoming: q.to === state.me, who: q.to === state.me ? q.from : q.to,
    name: q.name || nameOf(q.image), views: q.views, state: q.state,
  }));
  byId("requests-table").hidden = !rows.length;
  showKeyed(byId("requests-rows"), rows, (q) => q.id, requestRow, "");
  byId("requests-none").hidden = rows.length > 0;
}

function requestRow(q) {
  const actions = el("td", {});
  if (q.incoming && q.state === "pending") {
    const views = el("input", { type: "number", min: "1", value: String(q.views),
                                id: "views-" + q.id, "aria-label": "Views to grant " + q.who });
    actions.append(views, " ",
      el("button", { type: "button", "data-action": "approve", "data-request": q.id,
                     onclick: () => act("requests-error", "/api/approve", { id: q.id, views: Number(views.value) || q.views },
                       (r) => "Approved: " + q.who + " gets " + plural(r.views_left ?? q.views, "view", "views") + " of " + q.name) },
         "Approve"), " ",
      el("button", { type: "button", class: "danger", "data-action": "deny", "data-request": q.id,
                     onclick: () => act("requests-error", "/api/deny", { id: q.id },
                       () => "Denied " + q.who + "'s request for " + q.name) }, "Deny"));
  }
  return el("tr", { "data-request": q.id },
    el("td", { text: q.incoming ? "in" : "out" }),
    el("td", { text: q.who }),
    el("td", { text: q.name }),
    el("td", { class: "num", text: String(q.views) }),
    el("td", {}, el("span", { class: "badge " + q.state, text: q.state })),
    actions);
}

// Runs one action: its error (or what it did) stays in `line` until the next action there.
async function act(line, path, body, done) {
  setError(line, "");
  const status = byId(line + "-status");
  if (status) status.textContent = "";
  try {
    const result = await api(path, body);
    if (status && done) status.textContent = done(result);
  } catch (e) {
    setError(line, e.message);
  }
  refresh();
}

async function renderPeers(online) {
  const others = online.filter((u) => u.online && u.user !== state.me);
  for (const u of others) for (const s of u.shared) state.names[s.id] = s.name;
  await Promise.all(others.map(async (u) => {
    const key = u.shared.map((s) => s.id).join(",");
    if (state.previewKeys[u.user] === key) return;
    state.previewKeys[u.user] = key;
    try {
      state.previews[u.user] = await api("/api/previews", { owner: u.user });
    } catch (e) {
      delete state.previewKeys[u.user];
      state.previews[u.user] = [];
    }
  }));
  showKeyed(byId("peers-list"), others.map((u) => ({ user: u.user, addr: u.addr || "" })), (u) => u.user,
    (u) => el("div", { class: "peer", "data-peer": u.user },
      el("h3", {}, u.user + " ", el("span", { class: "badge online", text: "online" }),
         " ", el("span", { class: "meta mono", text: u.addr })),
      el("div", { class: "tiles" })),
    "Nobody else is online.");
  for (const u of others) {
    const tiles = byId("peers-list").querySelector("[data-peer='" + CSS.escape(u.user) + "'] .tiles");
    const shared = u.shared.map((s) => {
      const preview = (state.previews[u.user] || []).find((p) => p.id === s.id);
      return { owner: u.user, id: s.id, name: s.name, preview: preview ? baseName(preview.path) : null };
    });
    showKeyed(tiles, shared, (s) => s.id, sharedTile, "shares nothing");
  }
}

function sharedTile(s) {
  const views = el("input", { type: "number", min: "1", value: "2", id: "ask-" + s.id,
                              "aria-label": "Views to ask of " + s.name });
  return el("div", { class: "tile" },
    s.preview
      ? el("img", { src: fileUrl({ kind: "peer-preview", owner: s.owner, file: s.preview }),
                    alt: "Preview of " + s.name + " by " + s.owner })
      : el("div", { class: "ph", text: "no preview yet" }),
    el("span", { class: "name", text: s.name, title: s.name }),
    el("div", {}, views, " ",
      el("button", { type: "button", "data-action": "request", "data-owner": s.owner, "data-image": s.id,
                     onclick: () => act("peers-error", "/api/request", { owner: s.owner, image: s.id, views: Number(views.value) || 1 },
                       (r) => "Asked " + s.owner + " for " + plural(Number(views.value) || 1, "view", "views") + " of " + s.name + ": " + r.state) },
         "Request")));
}

// --- owner controls: receipts, allow, quota, revoke -----------------------------------------

function renderReceipts(receipts) {
  state.receipts = {};
  for (const r of receipts) state.receipts[r.id] = r.viewers;
  state.receiptsKnown = true;
  renderOwnerControls();
}

function renderOwnerControls() {
  const own = state.own || [];
  byId("owner-controls").hidden = !own.length;
  const blocks = own.map((i) => ({ id: i.id, name: i.name }));
  showKeyed(byId("owner-controls-list"), blocks, (i) => i.id, ownedBlock, "");
  for (const i of own) {
    const rows = byId("owner-controls-list").querySelector("[data-owned='" + i.id + "'] tbody");
    const receipts = state.receipts[i.id];
    const note = byId("owner-controls-list").querySelector("[data-owned='" + i.id + "'] .receipts-note");
    note.textContent = receipts === undefined
      ? (state.receiptsKnown ? "Nobody may view it yet." : "Receipts come from the cloud: asking...")
      : receipts.length ? "" : "Nobody may view it yet.";
    rows.closest("table").hidden = !(receipts && receipts.length);
    const items = (receipts || []).map((r) => ({
      image: i.id, name: i.name, viewer: r.viewer, used: r.views_used, left: r.views_left,
      revoked: !!r.revoked, confirming: state.confirming === i.id + "/" + r.viewer,
    }));
    showKeyed(rows, items, (r) => r.viewer, receiptRow, "");
  }
}

function ownedBlock(i) {
  const who = el("input", { type: "text", id: "allow-who-" + i.id, placeholder: "user",
                            "aria-label": "Viewer to allow for " + i.name });
  const views = el("input", { type: "number", min: "1", value: "2", id: "allow-views-" + i.id,
                              "aria-label": "Views to allow of " + i.name });
  const allow = el("form", { class: "row", "data-allow": i.id, onsubmit: (event) => {
    event.preventDefault();
    const viewer = who.value.trim();
    const n = Number(views.value) || 1;
    if (!viewer) { setError("owner-error", "Name the user to allow."); return; }
    act("owner-error", "/api/allow", { image: i.id, viewer, views: n },
      (r) => viewer + " now has " + plural(r.views_left, "view", "views") + " of " + i.name +
             (r.delivered ? " (copy delivered)" : " (the copy waits in " + viewer + "'s mailbox)"));
  } }, who, views, el("button", { type: "submit", "data-action": "allow", "data-image": i.id }, "Allow"));
  return el("div", { class: "owned", "data-owned": i.id },
    el("h3", { text: i.name }),
    el("p", { class: "empty receipts-note" }),
    el("table", { hidden: true },
      el("thead", {}, el("tr", {}, ...["viewer", "views used", "views left", ""].map((h, n) =>
        el("th", { class: n === 1 || n === 2 ? "num" : null, scope: "col", text: h })))),
      el("tbody", {})),
    allow);
}

function receiptRow(r) {
  const cells = [
    el("td", { text: r.viewer }),
    el("td", { class: "num", "data-views-used": String(r.used), text: String(r.used) }),
    el("td", { class: "num", "data-views-left": String(r.left), text: String(r.left) }),
  ];
  const controls = el("td", {});
  if (r.revoked) {
    controls.append(el("span", { class: "badge zero", "data-revoked": "", text: "revoked" }));
  } else if (r.confirming) {
    controls.append("Revoke " + r.viewer + "'s views of " + r.name + "? ",
      el("button", { type: "button", class: "danger", "data-action": "confirm-revoke", "data-viewer": r.viewer,
                     onclick: () => {
                       state.confirming = null;
                       act("owner-error", "/api/revoke", { image: r.image, viewer: r.viewer },
                         () => r.viewer + " may no longer view " + r.name);
                     } }, "Yes, revoke"), " ",
      el("button", { type: "button", class: "secondary", "data-action": "cancel-revoke",
                     onclick: () => { state.confirming = null; renderOwnerControls(); } }, "Cancel"));
  } else {
    const quota = el("input", { type: "number", min: "0", value: String(r.left),
                                id: "quota-" + r.image + "-" + r.viewer,
                                "aria-label": "Views left for " + r.viewer + " of " + r.name });
    controls.append(quota, " ",
      el("button", { type: "button", class: "secondary", "data-action": "quota", "data-viewer": r.viewer,
                     "aria-label": "Set the views left for " + r.viewer,
                     onclick: () => act("owner-error", "/api/quota", { image: r.image, viewer: r.viewer, views: Number(quota.value) || 0 },
                       (c) => r.viewer + " now has " + plural(c.views_left, "view", "views") + " left of " + r.name) },
         "Set"), " ",
      el("button", { type: "button", class: "danger", "data-action": "revoke", "data-viewer": r.viewer,
                     "aria-label": "Revoke " + r.viewer + "'s views of " + r.name,
                     onclick: () => { state.confirming = r.image + "/" + r.viewer; renderOwnerControls(); } },
         "Revoke"));
  }
  return el("tr", { "data-viewer": r.viewer, class: r.revoked ? "revoked" : null }, ...cells, controls);
}

// --- share form ----------------------------------------------------------------------------

document.getElementById("share-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("share-file");
  const nameBox = document.getElementById("share-name");
  const button = document.getElementById("share-submit");
  const file = input.files[0];
  if (!file) return;
  const name = nameBox.value.trim() || file.name.replace(/\.[^.]*$/, "");
  setError("share-error", "");
  button.disabled = true;
  button.textContent = "Sharing...";
  try {
    await api("/api/upload?name=" + encodeURIComponent(name), undefined, file);
    input.value = "";
    nameBox.value = "";
  } catch (e) {
    setError("share-error", e.message);
  }
  button.disabled = false;
  button.textContent = "Share";
  refresh();
});

// --- start and follow ----------------------------------------------------------------------

let refreshing = null;
let again = false;

// Re-reads everything; calls that arrive while one runs make it run once more.
async function refresh() {
  if (refreshing) { again = true; return refreshing; }
  refreshing = (async () => {
    do {
      again = false;
      // Each list loads on its own: one slow or failing call never holds back the others.
      // A failed load shows in the page's load line; an action's error stays in its section
      // until the next action.
      const failed = [];
      const load = async (what, path, render) => {
        try { await render(await api(path)); } catch (e) { failed.push(what + ": " + e.message); }
      };
      await Promise.all([
        load("your requests", "/api/requests", renderRequests),
        load("your images", "/api/images", renderImages),
        load("who is online", "/api/online", renderPeers),
        load("receipts", "/api/receipts", renderReceipts),
      ]);
      setError("load-error", failed.length ? "Could not load " + failed.join("; ") : "");
    } while (again);
  })().finally(() => { refreshing = null; });
  return refreshing;
}

async function start() {
  try {
    state.me = (await api("/api/whoami")).user;
  } catch (_) {
    document.getElementById("login").hidden = false;
    return;
  }
  document.title = state.me + "'s gallery";
  document.getElementById("title").textContent = state.me + "'s gallery";
  for (const id of ["share", "own", "copies", "requests", "peers"]) {
    document.getElementById(id).hidden = false;
  }
  await refresh();
  const live = document.getElementById("live");
  const events = new EventSource("/api/events?token=" + encodeURIComponent(TOKEN));
  events.onopen = () => { live.className = "live on"; live.textContent = "live"; };
  events.onerror = () => { live.className = "live"; live.textContent = "reconnecting"; };
  events.addEventListener("library", refresh);
  events.addEventListener("tick", refresh);
}

start();
