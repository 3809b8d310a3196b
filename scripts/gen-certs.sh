#!/usr/bin/env bash
# Development certificates for lexbus's tls-tcp transport:
#   a CA (ca-cert.pem, ca-key.pem), a server certificate for localhost
#   (localhost-cert.pem, localhost-key.pem; SANs localhost, 127.0.0.1, ::1),
#   and one client certificate per SERVICE (<service>-cert.pem,
#   <service>-key.pem; CN and DNS SAN = the service name, for mutual TLS).
#
#   scripts/gen-certs.sh [--out DIR] [--days N] [--ca-days N] [--force] SERVICE...
#     --out DIR     where to write (default: certs)
#     --days N      validity of the certificates made by this run (default 365)
#     --ca-days N   validity of a new CA (default 3650; a kept CA keeps its dates)
#     --force       make a new CA too (every certificate of the old CA stops verifying)
#
# Re-running keeps the existing CA (so certificates already handed out stay
# valid) and re-issues the localhost certificate and the named services.
# A certificate that would outlive its CA is warned about (it stops
# verifying when the CA expires).  Keys are 0600; a folder this script
# creates is 0700, an existing one keeps its mode (a warning if group or
# others can enter it).  Development only: production certificates come
# from your own CA.
set -euo pipefail
out=certs
days=365
ca_days=3650
force=0
services=()
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gen-certs: $*" >&2; exit 2; }
while (($#)); do
  case "$1" in
    --out|--days|--ca-days)
      (($# >= 2)) && [[ -n "$2" ]] || die "$1 needs a value"
      case "$1" in --out) out="$2" ;; --days) days="$2" ;; *) ca_days="$2" ;; esac
      shift ;;
    --out=*) out="${1#--out=}"; [[ -n "$out" ]] || die "--out needs a value" ;;
    --days=*) days="${1#--days=}" ;;
    --ca-days=*) ca_days="${1#--ca-days=}" ;;
    --force) force=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; services+=("$@"); break ;;
    -*) echo "gen-certs: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) services+=("$1") ;;
  esac
  shift
done
[[ "$days" =~ ^[0-9]{1,5}$ ]] && ((10#$days > 0)) || die "--days must be a number of days from 1 to 99999"
days=$((10#$days))
[[ "$ca_days" =~ ^[0-9]{1,5}$ ]] && ((10#$ca_days > 0)) || die "--ca-days must be a number of days from 1 to 99999"
ca_days=$((10#$ca_days))
for s in ${services[@]+"${services[@]}"}; do
  # The bus's service-name characters, minus '/', which cannot be in a file name.
  [[ "$s" =~ ^[A-Za-z0-9_.@-]{1,64}$ && "$s" != .* && "$s" != -* ]] ||
    die "'$s' is not a usable service name (1-64 of A-Z a-z 0-9 _ . - @, not starting with . or -)"
  case "$s" in
    ca) die "'ca' would overwrite the CA files; pick another service name" ;;
    localhost) die "'localhost' would overwrite the server certificate; pick another service name" ;;
  esac
done
command -v openssl >/dev/null || { echo "gen-certs: openssl not found (apt-get install openssl)" >&2; exit 1; }

# Only a folder made here is set to 0700: chmod on an existing one (--out
# /tmp, say) would change who may use it.  Parents get the caller's umask.
if [[ -d "$out" ]]; then
  perms=$(stat -c %a -- "$out" 2>/dev/null || stat -f %Lp -- "$out")   # GNU, then BSD
  if (( 8#$perms & 077 )); then
    echo "gen-certs: warning: $out is mode $perms (group/others may enter it); the keys are 0600," \
      "but consider a private folder (chmod 700, or --out a new one)" >&2
  fi
else
  parent=$(dirname -- "$out")
  [[ -d "$parent" ]] || mkdir -p -- "$parent"
  mkdir -m 700 -- "$out"
fi
umask 077
cd -- "$out"
err=$(mktemp "${TMPDIR:-/tmp}/gen-certs.XXXXXX")
trap 'rm -f -- "$err" ./*.csr.tmp ./*.ext.tmp ./*.pem.tmp' EXIT

# run CMD...: runs an openssl command, shows its errors only if it fails.
run() {
  if ! "$@" 2>"$err" >/dev/null; then
    echo "gen-certs: failed: $*" >&2
    cat "$err" >&2
    exit 1
  fi
}

# Files are written under .tmp names and renamed, so a daemon reloading
# (SIGHUP) during a run never reads half a file.
if [[ $force -eq 1 || ! -f ca-cert.pem || ! -f ca-key.pem ]]; then
  run openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$ca_days" \
    -keyout ca-key.pem.tmp -out ca-cert.pem.tmp -subj "/CN=lexbus development CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign"
  chmod 600 ca-key.pem.tmp
  chmod 644 ca-cert.pem.tmp
  mv -f ca-key.pem.tmp ca-key.pem
  mv -f ca-cert.pem.tmp ca-cert.pem
  rm -f ca-cert.srl
  echo "gen-certs: new CA $out/ca-cert.pem ($ca_days days)"
  new_ca=1
else
  run openssl x509 -in ca-cert.pem -noout    # a readable certificate, or stop here
  echo "gen-certs: keeping the CA in $out/ca-cert.pem (--force replaces it)"
  new_ca=0
fi

# A leaf valid past the CA's end stops verifying with it: say so once.
if ! openssl x509 -in ca-cert.pem -noout -checkend $((days * 86400)) >/dev/null 2>&1; then
  ca_end=$(openssl x509 -in ca-cert.pem -noout -enddate 2>/dev/null | sed 's/^notAfter=//')
  echo "gen-certs: warning: certificates valid for $days days would outlive the CA (it expires $ca_end);" \
    "they stop verifying then: use a shorter --days, or --force --ca-days N for a new CA" >&2
fi

issued=" "
# issue NAME CN EXTENSIONS
issue() {
  local name="$1" cn="$2" ext="$3"
  run openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name-key.pem.tmp" \
    -out "$name.csr.tmp" -subj "/CN=$cn"
  printf '%s\n' "$ext" > "$name.ext.tmp"
  run openssl x509 -req -in "$name.csr.tmp" -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
    -days "$days" -sha256 -out "$name-cert.pem.tmp" -extfile "$name.ext.tmp"
  rm -f "$name.csr.tmp" "$name.ext.tmp"
  chmod 600 "$name-key.pem.tmp"
  chmod 644 "$name-cert.pem.tmp"
  # Key first: a reload between the two renames sees a mismatch and keeps
  # its old certificate rather than loading a half-updated pair.
  mv -f "$name-key.pem.tmp" "$name-key.pem"
  mv -f "$name-cert.pem.tmp" "$name-cert.pem"
  issued+="$name "
  echo "gen-certs: $out/$name-cert.pem (CN=$cn, $days days)"
}

issue localhost localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
for s in ${services[@]+"${services[@]}"}; do
  [[ "$issued" == *" $s "* ]] && continue
  issue "$s" "$s" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:$s"
done
chmod 600 ca-key.pem ca-cert.srl 2>/dev/null || true

if [[ $new_ca -eq 1 ]]; then
  # Certificates of the previous CA left in the folder no longer verify.
  for f in *-cert.pem; do
    [[ -e "$f" ]] || continue
    n="${f%-cert.pem}"
    [[ "$n" == ca || "$issued" == *" $n "* ]] && continue
    echo "gen-certs: note: $out/$f was issued by the previous CA; re-run with '$n' to renew it" >&2
  done
fi
