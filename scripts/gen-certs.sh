#!/usr/bin/env bash
# Development certificates for lexbus's tls-tcp transport:
#   a CA (ca-cert.pem, ca-key.pem), a server certificate for localhost
#   (localhost-cert.pem, localhost-key.pem; SANs localhost, 127.0.0.1, ::1),
#   and one client certificate per SERVICE (<service>-cert.pem,
#   <service>-key.pem; CN and DNS SAN = the service name, for mutual TLS).
#
#   scripts/gen-certs.sh [--out certs] [--days N] [--force] SERVICE...
#
# Re-running keeps the existing CA (so certificates already handed out stay
# valid) unless --force.  Keys are 0600, the directory 0700.  For
# development only: production certificates come from your own CA.
set -euo pipefail
out=certs
days=365
force=0
services=()
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift ;;
    --days) days="${2:?--days needs a number}"; shift ;;
    --force) force=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gen-certs: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) services+=("$1") ;;
  esac
  shift
done
[[ "$days" =~ ^[0-9]+$ && "$days" -gt 0 ]] || { echo "gen-certs: --days must be a positive number" >&2; exit 2; }
for s in "${services[@]}"; do
  [[ "$s" =~ ^[A-Za-z0-9_.@/-]{1,64}$ && "$s" != */* ]] || {
    echo "gen-certs: '$s' is not a service name (A-Z a-z 0-9 _ . - @, at most 64)" >&2; exit 2; }
done
command -v openssl >/dev/null || { echo "gen-certs: openssl not found (apt-get install openssl)" >&2; exit 1; }

umask 077
mkdir -p "$out"
chmod 700 "$out"
cd "$out"

if [[ $force -eq 1 || ! -f ca-cert.pem || ! -f ca-key.pem ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -keyout ca-key.pem -out ca-cert.pem -subj "/CN=lexbus development CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "gen-certs: new CA in $out/ca-cert.pem"
else
  echo "gen-certs: keeping the existing CA (--force replaces it)"
fi

# issue NAME CN EXTENSIONS
issue() {
  local name="$1" cn="$2" ext="$3"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name-key.pem" \
    -out "$name.csr" -subj "/CN=$cn" 2>/dev/null
  printf '%s\n' "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
    -days "$days" -out "$name-cert.pem" -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
  chmod 600 "$name-key.pem"
  chmod 644 "$name-cert.pem"
  echo "gen-certs: $out/$name-cert.pem (CN=$cn)"
}

issue localhost localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
for s in "${services[@]}"; do
  issue "$s" "$s" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:$s"
done
chmod 600 ca-key.pem
chmod 644 ca-cert.pem
