#!/usr/bin/env bash
# Re-fetch the vendored browser libraries (static/vendor/) at the exact versions pinned below,
# and rewrite static/vendor/VERSIONS.txt to list them.
#
# Usage: scripts/vendor.sh
# To upgrade, change a version below, run the script and review the diff.
# Needs node and npm; fetches from the npm registry with `npm pack` (no install scripts run).
set -euo pipefail

MARKED_VERSION=18.2.1
DOMPURIFY_VERSION=3.4.18
HIGHLIGHT_VERSION=11.12.0
KATEX_VERSION=0.19.1
# axe-core is for the accessibility tests only: injected by them, never served in a page.
AXE_VERSION=4.14.1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$ROOT/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# fetch <package> <version> <dir>: unpack the registry tarball into $WORK/<dir>/package
fetch() {
  local pkg="$1" version="$2" dir="$3"
  mkdir -p "$WORK/$dir"
  (cd "$WORK/$dir" && npm pack --silent --json "$pkg@$version" > pack.json)
  local tarball
  tarball="$(node -e 'console.log(require(process.argv[1])[0].filename)' "$WORK/$dir/pack.json")"
  tar -xzf "$WORK/$dir/$tarball" -C "$WORK/$dir"
}

# integrity <dir>: the registry's integrity string of the tarball fetched into $WORK/<dir>
integrity() {
  node -e 'console.log(require(process.argv[1])[0].integrity)' "$WORK/$1/pack.json"
}

fetch marked "$MARKED_VERSION" marked
fetch dompurify "$DOMPURIFY_VERSION" dompurify
fetch @highlightjs/cdn-assets "$HIGHLIGHT_VERSION" highlight
fetch katex "$KATEX_VERSION" katex
fetch axe-core "$AXE_VERSION" axe

rm -rf "$VENDOR/marked" "$VENDOR/dompurify" "$VENDOR/highlight" "$VENDOR/katex" "$VENDOR/axe"
mkdir -p "$VENDOR/marked" "$VENDOR/dompurify" "$VENDOR/highlight/styles" "$VENDOR/katex/fonts" "$VENDOR/axe"

# Source maps come along: the files reference them, and hashed static storage
# (collectstatic) fails on a referenced map that does not exist.
cp "$WORK/marked/package/lib/marked.esm.js" \
   "$WORK/marked/package/lib/marked.esm.js.map" \
   "$WORK/marked/package/LICENSE" "$VENDOR/marked/"

cp "$WORK/dompurify/package/dist/purify.es.mjs" \
   "$WORK/dompurify/package/dist/purify.es.mjs.map" \
   "$WORK/dompurify/package/LICENSE" "$VENDOR/dompurify/"
if [ -f "$WORK/dompurify/package/LICENSE-MPL" ]; then
  cp "$WORK/dompurify/package/LICENSE-MPL" "$VENDOR/dompurify/"
fi

cp "$WORK/highlight/package/es/highlight.min.js" \
   "$WORK/highlight/package/LICENSE" "$VENDOR/highlight/"
cp "$WORK/highlight/package/styles/github.min.css" \
   "$WORK/highlight/package/styles/github-dark.min.css" "$VENDOR/highlight/styles/"

# KaTeX: the ES module, its stylesheet and every font the stylesheet names (hashed static
# storage fails on a referenced file that does not exist).
cp "$WORK/katex/package/dist/katex.mjs" "$WORK/katex/package/dist/katex.min.css" \
   "$WORK/katex/package/LICENSE" "$VENDOR/katex/"
cp "$WORK/katex/package/dist/fonts/"* "$VENDOR/katex/fonts/"

cp "$WORK/axe/package/axe.min.js" "$WORK/axe/package/LICENSE" "$VENDOR/axe/"

{
  echo "# Browser libraries vendored from the npm registry at pinned versions."
  echo "# Re-fetch them with scripts/vendor.sh; each package's licence file sits next to its files."
  echo "#"
  echo "# package@version | files in static/vendor/ | licence | npm tarball integrity"
  echo "marked@$MARKED_VERSION | marked/marked.esm.js, marked/marked.esm.js.map | MIT (marked/LICENSE) | $(integrity marked)"
  echo "dompurify@$DOMPURIFY_VERSION | dompurify/purify.es.mjs, dompurify/purify.es.mjs.map | Apache-2.0 or MPL-2.0 (dompurify/LICENSE, dompurify/LICENSE-MPL) | $(integrity dompurify)"
  echo "@highlightjs/cdn-assets@$HIGHLIGHT_VERSION | highlight/highlight.min.js (ES module build), highlight/styles/github.min.css (light), highlight/styles/github-dark.min.css (dark) | BSD-3-Clause (highlight/LICENSE) | $(integrity highlight)"
  echo "katex@$KATEX_VERSION | katex/katex.mjs, katex/katex.min.css, katex/fonts/* | MIT (katex/LICENSE) | $(integrity katex)"
  echo "axe-core@$AXE_VERSION | axe/axe.min.js (accessibility tests only, not served in pages) | MPL-2.0 (axe/LICENSE) | $(integrity axe)"
} > "$VENDOR/VERSIONS.txt"

echo "Vendored marked@$MARKED_VERSION, dompurify@$DOMPURIFY_VERSION, @highlightjs/cdn-assets@$HIGHLIGHT_VERSION, katex@$KATEX_VERSION, axe-core@$AXE_VERSION into $VENDOR"
