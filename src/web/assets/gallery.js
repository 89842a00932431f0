// The gallery: everything private comes from the peer's local API (/api/*), the same API
// the `peer` CLI calls, with the login token from the page's URL. Live: /api/events.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const state = { me: null, shown: {}, previews: {}, previewKeys: {}, viewSeq: 0 };

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

// --- small DOM helpers ---------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// Replaces a list's contents only when what it shows changed (keeps focus and clicks stable).
function show(id, key, build) {
  const json = JSON.stringify(key);
  if (state.shown[id] === json) return;
  state.shown[id] = json;
  const box = document.getElementById(id);
  box.replaceChildren(...build());
}

function setError(id, message) {
  document.getElementById(id).textContent = message || "";
}

// --- sections ------------------------------------------------------------------------------

function renderImages(images) {
  const own = images.filter((i) => i.views_left === null);
  const copies = images.filter((i) => i.views_left !== null);
  show("own-list", own, () => own.length ? own.map((i) => el("div", { class: "tile" },
    el("img", { src: fileUrl({ kind: "preview", id: i.id }), alt: "Preview of " + i.name }),
    el("span", { class: "name", text: i.name, title: i.name }),
    el("span", { class: "meta mono", text: i.id.slice(0, 12) }),
    viewButton(i))) : [el("p", { class: "empty", text: "Nothing shared yet: share a photo." })]);
  show("copies-list", [copies, Object.keys(state.previews)], () => copies.length ? copies.map((i) => {
    const preview = (state.previews[i.owner] || []).find((p) => p.id === i.id);
    const left = i.views_left;
    return el("div", { class: "tile", "data-copy": i.id },
      preview
        ? el("img", { src: fileUrl({ kind: "peer-preview", owner: i.owner, file: baseName(preview.path) }),
                      alt: "Preview of " + i.name + " from " + i.owner })
        : el("div", { class: "ph", text: i.name + " (sealed copy)" }),
      el("span", { class: "name", text: i.name, title: i.name }),
      el("span", { class: "meta" }, "from " + i.owner + " · ",
        el("span", { class: left > 0 ? "badge online" : "badge zero", "data-views-left": String(left),
                     text: left === 1 ? "1 view left" : left + " views left" })),
      viewButton(i));
  }) : [el("p", { class: "empty", text: "No copies yet: request views from a peer online." })]);
  renderOwnerControls(own);
}

function viewButton(image) {
  return el("button", { type: "button", "data-action": "view", "data-image": image.id,
                        "aria-label": "View " + image.name, onclick: () => view(image) }, "View");
}

async function view(image) {
  const viewer = document.getElementById("viewer");
  const caption = document.getElementById("viewer-caption");
  viewer.hidden = false;
  caption.className = "";
  caption.textContent = "Asking the cloud for a view of " + image.name + "...";
  try {
    const result = await api("/api/view", { image: image.id });
    const img = document.getElementById("viewer-img");
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
        : image.name + " from " + image.owner + ": " + result.views_left +
          (result.views_left === 1 ? " view left" : " views left");
    }
  } catch (e) {
    caption.className = "default";
    caption.textContent = "Could not view " + image.name + ": " + e.message;
  }
}

function renderRequests(requests) {
  show("requests-list", requests, () => {
    if (!requests.length) return [el("p", { class: "empty", text: "No requests in or out." })];
    const rows = requests.slice().reverse().map((q) => {
      const incoming = q.to === state.me;
      const actions = el("td", {});
      if (incoming && q.state === "pending") {
        const views = el("input", { type: "number", min: "1", value: String(q.views),
                                    id: "views-" + q.id, "aria-label": "Views to grant " + q.from });
        actions.append(views, " ",
          el("button", { type: "button", "data-action": "approve", "data-request": q.id,
                         onclick: () => decide("/api/approve", { id: q.id, views: Number(views.value) || q.views }) },
             "Approve"), " ",
          el("button", { type: "button", class: "danger", "data-action": "deny", "data-request": q.id,
                         onclick: () => decide("/api/deny", { id: q.id }) }, "Deny"));
      }
      return el("tr", { "data-request": q.id },
        el("td", { text: incoming ? "in" : "out" }),
        el("td", { text: incoming ? q.from : q.to }),
        el("td", { text: q.name || q.image.slice(0, 12) }),
        el("td", { class: "num", text: String(q.views) }),
        el("td", {}, el("span", { class: "badge " + q.state, text: q.state })),
        actions);
    });
    return [el("table", {},
      el("thead", {}, el("tr", {}, ...["", "who", "image", "views", "state", ""].map((h, i) =>
        el("th", { class: i === 3 ? "num" : null, scope: "col", text: h })))),
      el("tbody", {}, ...rows))];
  });
}

async function decide(path, body) {
  setError("requests-error", "");
  try { await api(path, body); } catch (e) { setError("requests-error", e.message); }
  refresh();
}

async function renderPeers(online) {
  const others = online.filter((u) => u.online && u.user !== state.me);
  for (const u of others) {
    const key = u.shared.map((s) => s.id).join(",");
    if (state.previewKeys[u.user] === key) continue;
    state.previewKeys[u.user] = key;
    try {
      state.previews[u.user] = await api("/api/previews", { owner: u.user });
    } catch (e) {
      delete state.previewKeys[u.user];
      setError("peers-error", "previews of " + u.user + ": " + e.message);
    }
  }
  show("peers-list", [others, state.previews], () => {
    if (!others.length) return [el("p", { class: "empty", text: "Nobody else is online." })];
    return others.map((u) => el("div", { class: "peer", "data-peer": u.user },
      el("h3", {}, u.user + " ", el("span", { class: "badge online", text: "online" }),
         " ", el("span", { class: "meta mono", text: u.addr || "" })),
      el("div", { class: "tiles" }, ...(u.shared.length ? u.shared.map((s) => {
        const preview = (state.previews[u.user] || []).find((p) => p.id === s.id);
        const views = el("input", { type: "number", min: "1", value: "2", id: "ask-" + s.id,
                                    "aria-label": "Views to ask of " + s.name });
        return el("div", { class: "tile" },
          preview
            ? el("img", { src: fileUrl({ kind: "peer-preview", owner: u.user, file: baseName(preview.path) }),
                          alt: "Preview of " + s.name + " by " + u.user })
            : el("div", { class: "ph", text: "no preview yet" }),
          el("span", { class: "name", text: s.name, title: s.name }),
          el("div", {}, views, " ",
            el("button", { type: "button", "data-action": "request", "data-owner": u.user, "data-image": s.id,
                           onclick: () => ask(u.user, s.id, Number(views.value) || 1) }, "Request")));
      }) : [el("p", { class: "empty", text: "shares nothing" })]))));
  });
}

async function ask(owner, image, views) {
  setError("peers-error", "");
  try { await api("/api/request", { owner, image, views }); } catch (e) { setError("peers-error", e.message); }
  refresh();
}

// OWNER CONTROLS (allow / revoke / quota): room for the routes /api/allow, /api/revoke and
// /api/quota that are being added separately. Until they exist this section stays hidden.
function renderOwnerControls(_ownImages) {
  document.getElementById("owner-controls").hidden = true;
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
