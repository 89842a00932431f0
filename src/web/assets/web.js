// What both pages share (the gallery on a user's peer, the dashboard on a node), loaded before
// each page's own script: building elements, finding them, and counting words.
"use strict";

// An element with attributes and children. `class` and `text` set the class name and the
// text; `on...` adds a listener; a null, undefined or false attribute is left out, and true
// sets it empty (a boolean attribute).
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

// An SVG element with attributes.
function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function byId(id) {
  return document.getElementById(id);
}

function plural(n, one, many) {
  return n + " " + (n === 1 ? one : many);
}
