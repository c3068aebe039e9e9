#!/usr/bin/env bash
# Builds groundtrail-collector_<version>_<arch>.deb and groundtrail-agent_<version>_<arch>.deb
# with dpkg-deb: the binary, its systemd unit and sysusers.d file, the packaged config
# (/etc/groundtrail/<name>.toml, a conffile), the generated example config, and maintainer
# scripts that create the system user and directories.
#
#   scripts/build-deb.sh [--bin-dir DIR] [--out DIR] [--fast]
#
# --fast: gzip -1 instead of xz (the tests package large debug binaries).
# Without --bin-dir the release binaries are built (cargo build --release). The maintainer
# scripts honour $DPKG_ROOT, so `dpkg --root=R --force-script-chrootless -i` installs into a
# scratch root without touching this machine (that is what tests/tests/packaging.rs does).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN_DIR=""
OUT="$ROOT/target/deb"
COMPRESS=(-Zxz)
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --fast) COMPRESS=(-Zgzip -z1); shift ;;
    *) echo "usage: $0 [--bin-dir DIR] [--out DIR] [--fast]" >&2; exit 2 ;;
  esac
done
if [ -z "$BIN_DIR" ]; then
  cargo build --release -p groundtrail-collector -p groundtrail-agent --bins
  TARGET=${CARGO_TARGET_DIR:-target}; [[ $TARGET = /* ]] || TARGET="$ROOT/$TARGET"  # where cargo builds
  BIN_DIR="$TARGET/release"
fi
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
ARCH=$(dpkg --print-architecture)
mkdir -p "$OUT"
STAGE="$OUT/.stage"   # our own staging tree, beside the packages
rm -rf -- "$STAGE"
mkdir -p "$STAGE"
trap 'rm -rf -- "$STAGE"' EXIT

# package name, config name, description
build() {
  local pkg=$1 conf=$2 summary=$3 long=$4
  local d="$STAGE/$pkg"
  install -D -m 0755 "$BIN_DIR/$pkg" "$d/usr/bin/$pkg"
  install -D -m 0644 "packaging/systemd/$pkg.service" "$d/lib/systemd/system/$pkg.service"
  install -D -m 0644 "packaging/systemd/$pkg.sysusers" "$d/usr/lib/sysusers.d/$pkg.conf"
  install -D -m 0640 "packaging/config/$conf.toml" "$d/etc/groundtrail/$conf.toml"
  install -D -m 0644 "packaging/config/$conf.example.toml" "$d/usr/share/doc/$pkg/$conf.example.toml"
  install -D -m 0644 README.md "$d/usr/share/doc/$pkg/README.md"
  mkdir -p "$d/DEBIAN"
  cat >"$d/DEBIAN/control" <<EOF
Package: $pkg
Version: $VERSION
Architecture: $ARCH
Maintainer: Groundtrail <groundtrail@example.invalid>
Section: admin
Priority: optional
Depends: libc6 (>= 2.34)
Recommends: systemd
Homepage: https://example.invalid/groundtrail
Description: $summary
$(printf '%s\n' "$long" | fold -s -w 78 | sed 's/^/ /')
EOF
  echo "/etc/groundtrail/$conf.toml" >"$d/DEBIAN/conffiles"

  cat >"$d/DEBIAN/postinst" <<EOF
#!/bin/sh
# $pkg postinst: the system user, its directories and the config's permissions, then the
# service (only on a running systemd, never when installing into another root: \$DPKG_ROOT).
set -e
R="\${DPKG_ROOT:-}"
if [ "\$1" = configure ]; then
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers --root="\$R/" "\$R/usr/lib/sysusers.d/$pkg.conf"
  elif [ -z "\$R" ]; then
    getent passwd $pkg >/dev/null || adduser --system --group --no-create-home \\
      --home /var/lib/$pkg --shell /usr/sbin/nologin --gecos "Groundtrail" $pkg
  else
    useradd --prefix "\$R" --system --user-group --no-create-home \\
      --home-dir /var/lib/$pkg --shell /usr/sbin/nologin $pkg 2>/dev/null || true
  fi
  # Names resolve against the target root's passwd/group (chown --from would need NSS).
  uid=\$(awk -F: '\$1 == "$pkg" { print \$3 }' "\$R/etc/passwd")
  gid=\$(awk -F: '\$1 == "$pkg" { print \$3 }' "\$R/etc/group")
  install -d -m 0700 "\$R/var/lib/$pkg"
  chown "\$uid:\$gid" "\$R/var/lib/$pkg"
  # The config may hold secrets (API keys): readable by the service's group, not the world.
  chown "0:\$gid" "\$R/etc/groundtrail/$conf.toml"
  chmod 0640 "\$R/etc/groundtrail/$conf.toml"
  if [ -z "\$R" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable $pkg.service >/dev/null 2>&1 || true
    if [ -n "\$2" ]; then
      systemctl try-restart $pkg.service || true
    else
      systemctl start $pkg.service || true
    fi
  fi
fi
exit 0
EOF
  cat >"$d/DEBIAN/prerm" <<EOF
#!/bin/sh
# $pkg prerm: a clean stop (SIGTERM) before the files go.
set -e
if [ -z "\${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ] && [ "\$1" = remove ]; then
  systemctl stop $pkg.service || true
  systemctl disable $pkg.service >/dev/null 2>&1 || true
fi
exit 0
EOF
  cat >"$d/DEBIAN/postrm" <<EOF
#!/bin/sh
# $pkg postrm: purge removes the state (journal/buffer, signing key, local trail) and the
# config directory if empty; the system user stays (its uid may own files elsewhere).
set -e
R="\${DPKG_ROOT:-}"
if [ "\$1" = purge ]; then
  rm -rf "\$R/var/lib/$pkg"
  rmdir "\$R/etc/groundtrail" 2>/dev/null || true
fi
if [ -z "\$R" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
EOF
  chmod 0755 "$d/DEBIAN/postinst" "$d/DEBIAN/prerm" "$d/DEBIAN/postrm"
  local deb="$OUT/${pkg}_${VERSION}_${ARCH}.deb"
  dpkg-deb --root-owner-group "${COMPRESS[@]}" --build "$d" "$deb" >/dev/null
  echo "$deb"
}

build groundtrail-collector collector \
  "Groundtrail collector: a real AWS CloudTrail trail for on-prem machines" \
  "Receives CloudTrail records from Groundtrail agents, deduplicates them and writes CloudTrail log files and a signed hourly digest chain to a local directory or S3, so that aws cloudtrail validate-logs, Athena and SIEM CloudTrail parsers work unchanged."
build groundtrail-agent agent \
  "Groundtrail agent: host audit events as CloudTrail records" \
  "Captures logins, sudo, user, package, service and configuration-file changes and application events as CloudTrail records, buffers them durably and ships them to the Groundtrail collector."
