#!/usr/bin/env bash
# Refreshes the Swagger UI that the service serves at /api/docs, from npm's swagger-ui-dist.
#
# Usage: scripts/vendor-swagger-ui.sh [VERSION]
#
# The files are committed (kv_storage/static/swagger-ui/), so that the service, its wheel and
# its image serve the UI offline. This script is for updating them: it fetches the pinned
# version (or VERSION) with `npm pack`, checks the tarball against the integrity npm's
# registry publishes, copies the files the page needs with the package's licence, and records
# the version and integrity in VERSION. Needs npm.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${1:-5.35.0}
TARGET=kv_storage/static/swagger-ui
FILES=(swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png
       LICENSE NOTICE)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
integrity=$(npm view "swagger-ui-dist@$VERSION" dist.integrity)
(cd "$work" && npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null)
tarball=$work/swagger-ui-dist-$VERSION.tgz
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [[ $actual != "$integrity" ]]; then
    echo "vendor-swagger-ui: integrity mismatch: registry $integrity, tarball $actual" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work"
for file in "${FILES[@]}"; do cp "$work/package/$file" "$TARGET/$file"; done
printf 'swagger-ui-dist %s\n%s\n' "$VERSION" "$integrity" >"$TARGET/VERSION"
echo "vendor-swagger-ui: swagger-ui-dist $VERSION in $TARGET"
