#!/bin/sh
# Container entrypoint for digdag-ha.
#   server [role flags…]   run one role: properties = /etc/digdag/$DIGDAG_ROLE.properties + the
#                           mounted secret properties + the API authentication, assembled 0600
#                           in a tmp dir
#   probe                   readiness: a real API call (database round trip), authenticated
#                           with the header `server` left in $WORK_DIR/probe-header
#   migrate                 digdag migrate run, retrying until the database answers
#   wait-migrated           block until the schema has no pending migration (init container)
# Secrets never go into environment variables: sh> tasks inherit the agent's environment.
set -eu

CONFIG_DIR=${DIGDAG_CONFIG_DIR:-/etc/digdag}
SECRET_PROPERTIES=${DIGDAG_SECRET_PROPERTIES:-/etc/digdag-secret/secret.properties}
GCP_KEY_FILE=${GCP_KEY_FILE:-/etc/gcp/key.json}
# Extra CA certificates (the chart's googleApis.caBundle, for a private endpoint): trusted besides
# the image's own by the JVM and by gcloud/bq. Absent: nothing changes.
EXTRA_CA_FILE=${DIGDAG_EXTRA_CA_FILE:-/etc/digdag-ca/ca.crt}
SYSTEM_CA_BUNDLE=${DIGDAG_SYSTEM_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# DIGDAG_AUTH (from the digdag-env ConfigMap): basic or none. The API credentials Secret is
# mounted here: username and password on the UI pods, username only on the others.
API_CREDENTIALS_DIR=${DIGDAG_API_CREDENTIALS_DIR:-/etc/digdag-api}
WORK_DIR=${DIGDAG_WORK_DIR:-/tmp/digdag}
JAVA_OPTS=${JAVA_OPTS:-}
# Java 16+ closes the JDK's internals that JDBI 2 (cglib) needs; Java 11 accepts the same flags
# silently. Kept equal to lib/digdag.ts javaFlags(17) by a test.
JAVA_MODULE_FLAGS="--add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.util=ALL-UNNAMED --add-opens java.base/java.lang.reflect=ALL-UNNAMED"
# The runtime's jars (one fat jar, or Digdag's Maven jars) and its main class.
DIGDAG_CP=${DIGDAG_CP:-/opt/digdag/lib/*}
# public/config.js with the web UI's login form (Digdag's 401 has no WWW-Authenticate, so a
# browser never prompts): served ahead of the jar's when DIGDAG_AUTH=basic.
UI_LOGIN_DIR=${DIGDAG_UI_LOGIN_DIR:-/opt/digdag/ui-login}
# digdag-ha's patches to Digdag (lib/digdag-patches.ts): ahead of Digdag's own classes when the
# image has them.
DIGDAG_PATCHES_DIR=${DIGDAG_PATCHES_DIR:-/opt/digdag/patches}

umask 077
mkdir -p "$WORK_DIR"

assemble() {
  # $1: the non-secret properties (from the ConfigMap)
  out="$WORK_DIR/server.properties"
  cat "$1" > "$out"
  if [ -f "$SECRET_PROPERTIES" ]; then
    printf '\n' >> "$out"
    cat "$SECRET_PROPERTIES" >> "$out"
  else
    echo "digdag-entrypoint: $SECRET_PROPERTIES is missing (create-secret applies it)" >&2
    exit 1
  fi
  echo "$out"
}

api_auth() {
  # $1: the assembled properties. Appends Digdag's basic-auth keys and leaves the matching
  # header for the readiness probe in $WORK_DIR/probe-header (0600). Roles without the password
  # (agents, schedulers…) still serve the API, so they are locked with a password that exists
  # only in this pod: a sh> task that reads its pod's files learns nothing that opens the UI.
  # Values go through printf (a shell builtin) and stdin, never onto a command line.
  : > "$WORK_DIR/probe-header"
  case "${DIGDAG_AUTH:-none}" in
    none) return 0 ;;
    basic) ;;
    *) echo "digdag-entrypoint: DIGDAG_AUTH=${DIGDAG_AUTH} (want basic or none)" >&2; exit 1 ;;
  esac
  if [ ! -s "$API_CREDENTIALS_DIR/username" ]; then
    echo "digdag-entrypoint: DIGDAG_AUTH=basic but $API_CREDENTIALS_DIR/username is missing (create-secret applies the Secret digdag-api-credentials)" >&2
    exit 1
  fi
  user=$(cat "$API_CREDENTIALS_DIR/username")
  if [ -s "$API_CREDENTIALS_DIR/password" ]; then
    password=$(cat "$API_CREDENTIALS_DIR/password")
  else
    password=$(head -c 24 /dev/urandom | base64 | tr -d '\n=' | tr '+/' '-_')
  fi
  printf '\nserver.authenticator.type = basic\nserver.authenticator.basic.username = %s\nserver.authenticator.basic.password = %s\nserver.authenticator.basic.admin = false\n' "$user" "$password" >> "$1"
  printf 'Authorization: Basic %s\n' "$(printf '%s:%s' "$user" "$password" | base64 | tr -d '\n')" > "$WORK_DIR/probe-header"
}

java_cacerts() {
  # The JRE's own truststore: $JAVA_HOME's, else next to the java on PATH, else Debian's.
  if [ -n "${DIGDAG_JAVA_CACERTS:-}" ]; then echo "$DIGDAG_JAVA_CACERTS"; return; fi
  for f in "${JAVA_HOME:-/nonexistent}/lib/security/cacerts" \
           "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")/lib/security/cacerts" \
           /etc/ssl/certs/java/cacerts; do
    if [ -f "$f" ]; then echo "$f"; return; fi
  done
}

extra_ca() {
  # The JVM: a PKCS12 truststore = the JRE's CAs + the extra ones, passed in JAVA_OPTS (the
  # server only). gcloud, bq and sh> tasks: a PEM bundle = the system's CAs + the extra ones.
  [ -f "$EXTRA_CA_FILE" ] || return 0
  dir="$WORK_DIR/extra-ca"
  rm -rf "$dir"
  mkdir -p "$dir"
  awk -v dir="$dir" '/-----BEGIN CERTIFICATE-----/ { n++; on = 1; f = sprintf("%s/cert-%d.pem", dir, n) } on { print > f } /-----END CERTIFICATE-----/ { on = 0; close(f) }' "$EXTRA_CA_FILE"
  if ! ls "$dir"/cert-*.pem >/dev/null 2>&1; then
    echo "digdag-entrypoint: $EXTRA_CA_FILE holds no PEM certificate" >&2
    exit 1
  fi
  store="$dir/truststore.p12"
  # A truststore holds public certificates only; its password protects nothing.
  pass=changeit
  cacerts=$(java_cacerts)
  if [ -n "$cacerts" ]; then
    if ! out=$(keytool -importkeystore -noprompt -srckeystore "$cacerts" -srcstorepass changeit -destkeystore "$store" -deststoretype PKCS12 -deststorepass "$pass" 2>&1); then
      echo "digdag-entrypoint: could not copy the JRE's CAs from $cacerts: $out" >&2
      exit 1
    fi
  else
    echo "digdag-entrypoint: no JRE truststore found; the JVM trusts only $EXTRA_CA_FILE" >&2
  fi
  i=0
  for f in "$dir"/cert-*.pem; do
    i=$((i + 1))
    if ! out=$(keytool -importcert -noprompt -alias "digdag-extra-ca-$i" -file "$f" -keystore "$store" -storetype PKCS12 -storepass "$pass" 2>&1); then
      echo "digdag-entrypoint: could not add certificate $i of $EXTRA_CA_FILE: $out" >&2
      exit 1
    fi
  done
  JAVA_OPTS="$JAVA_OPTS -Djavax.net.ssl.trustStore=$store -Djavax.net.ssl.trustStorePassword=$pass -Djavax.net.ssl.trustStoreType=PKCS12"
  bundle="$dir/ca-bundle.pem"
  if [ -f "$SYSTEM_CA_BUNDLE" ]; then cat "$SYSTEM_CA_BUNDLE" > "$bundle"; else : > "$bundle"; fi
  cat "$dir"/cert-*.pem >> "$bundle"
  export CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE="$bundle" REQUESTS_CA_BUNDLE="$bundle" SSL_CERT_FILE="$bundle"
}

gcp_credentials() {
  if [ -n "${GCP_PROJECT:-}" ]; then
    export GOOGLE_CLOUD_PROJECT="$GCP_PROJECT" CLOUDSDK_CORE_PROJECT="$GCP_PROJECT"
  fi
  if [ -f "$GCP_KEY_FILE" ]; then
    # A mounted service-account key: bq>/gcs operators and the gcloud/bq CLIs use the same identity.
    export GOOGLE_APPLICATION_CREDENTIALS="$GCP_KEY_FILE"
    export CLOUDSDK_CONFIG="$WORK_DIR/gcloud"
    if command -v gcloud >/dev/null 2>&1; then
      gcloud auth activate-service-account --key-file "$GCP_KEY_FILE" --quiet >/dev/null
    fi
  fi
  # Otherwise Application Default Credentials: the metadata server / Workload Identity.
}

digdag() {
  # shellcheck disable=SC2086
  exec java $JAVA_MODULE_FLAGS $JAVA_OPTS -cp "$DIGDAG_CP" io.digdag.cli.Main "$@"
}

mode=${1:-server}
[ $# -gt 0 ] && shift
case "$mode" in
  server)
    role=${DIGDAG_ROLE:?set DIGDAG_ROLE to ui, workflow, scheduler or agent}
    props=$(assemble "$CONFIG_DIR/$role.properties")
    api_auth "$props"
    if [ "${DIGDAG_AUTH:-none}" = basic ] && [ -f "$UI_LOGIN_DIR/public/config.js" ]; then
      DIGDAG_CP="$UI_LOGIN_DIR:$DIGDAG_CP"
    fi
    # .digdag-ha-key is written by lib/digdag-patches.ts once every patched class compiled.
    if [ -f "$DIGDAG_PATCHES_DIR/.digdag-ha-key" ]; then
      DIGDAG_CP="$DIGDAG_PATCHES_DIR:$DIGDAG_CP"
    fi
    # Before gcloud activates a key: that exchange already goes to the token endpoint.
    extra_ca
    gcp_credentials
    digdag server -c "$props" "$@"
    ;;
  probe)
    # curl reads the header from the file (-H @file): not on its command line, not in the pod spec.
    exec curl -fsS -o /dev/null --max-time 4 -H "@$WORK_DIR/probe-header" "http://127.0.0.1:${DIGDAG_PORT:-65432}/api/projects?name=readiness-probe"
    ;;
  migrate|wait-migrated)
    props=$(assemble "$CONFIG_DIR/migrate.properties")
    tries=${DIGDAG_DB_WAIT_TRIES:-90}
    i=0
    while :; do
      if [ "$mode" = migrate ]; then
        if java $JAVA_MODULE_FLAGS $JAVA_OPTS -cp "$DIGDAG_CP" io.digdag.cli.Main migrate run -c "$props"; then exit 0; fi
      else
        out=$(java $JAVA_MODULE_FLAGS $JAVA_OPTS -cp "$DIGDAG_CP" io.digdag.cli.Main migrate check -c "$props" 2>&1 || true)
        case "$out" in *"No update"*) exit 0 ;; esac
      fi
      i=$((i + 1))
      if [ "$i" -ge "$tries" ]; then
        echo "digdag-entrypoint: $mode did not succeed after $tries tries" >&2
        exit 1
      fi
      sleep 2
    done
    ;;
  *)
    digdag "$mode" "$@"
    ;;
esac
