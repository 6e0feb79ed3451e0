// Chat text as DOM nodes with its web addresses made clickable. Nodes are built one by one
// (text nodes and <a> elements), never from HTML, so a message cannot inject markup.

const URL_PATTERN = /\b(?:https?:\/\/|www\.)[^\s<>"]+/gi;
const TRAILING_PUNCTUATION = /[.,;:!?)\]}'"]+$/;

/** ``text`` split into text nodes and links to the http(s) addresses in it. */
export function linkify(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    let address = match[0];
    // "see https://example.org." ends the sentence, not the address (keep balanced parentheses).
    const trailing = address.match(TRAILING_PUNCTUATION)?.[0] ?? "";
    if (trailing && !(trailing.startsWith(")") && address.includes("("))) address = address.slice(0, -trailing.length);
    const href = safeHref(address);
    if (!href) continue;
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    const link = document.createElement("a");
    link.href = href;
    link.textContent = address;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    nodes.push(link);
    last = match.index + address.length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

function safeHref(address) {
  try {
    const url = new URL(address.startsWith("www.") ? `https://${address}` : address);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}
