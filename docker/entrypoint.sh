#!/bin/sh
# Container entrypoint for digdag-ha.
#   server [role flags…]   run one role: properties = /etc/digdag/$DIGDAG_ROLE.properties + the
#                           mounted secret properties + the API authentication, assembled 0600
#                           in a tmp dir
#   probe                   readiness: a real API call (database round trip), authenticated
#                           with the header `server` left in $WORK_DIR/probe-header
#   migrate                 digdag migrate run, retrying until the database answers
#   wait-migrated           block until the schema has no pending migration (init container)
#   cds-archive             (image build only) the class-data-sharing archives of the servers
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
# Jars, not directories (a directory on the classpath rules out class data sharing); the
# Dockerfile zips what build-image put into the context:
# public/config.js with the web UI's login form (Digdag's 401 has no WWW-Authenticate, so a
# browser never prompts): served ahead of the jar's when DIGDAG_AUTH=basic.
UI_LOGIN_JAR=${DIGDAG_UI_LOGIN_JAR:-/opt/digdag/ui-login.jar}
# digdag-ha's patches to Digdag (lib/digdag-patches.ts): ahead of Digdag's own classes when the
# image has them (the Dockerfile makes the jar only once every class compiled).
DIGDAG_PATCHES_JAR=${DIGDAG_PATCHES_JAR:-/opt/digdag/patches.jar}
# Class data sharing (AppCDS): per classpath an archive of the classes a server loads starting
# and running a workflow (a JavaScript template, sh>, loop>), made at image build by cds-archive.
# A new worker then starts and takes its first task on ~1/3 less CPU (the scale-out's reaction).
CDS_DIR=${DIGDAG_CDS_DIR:-/opt/digdag/cds}

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

# The classpath of every JVM here; $1: basic puts the login form first.
classpath() {
  cp=$DIGDAG_CP
  if [ -f "$DIGDAG_PATCHES_JAR" ]; then cp="$DIGDAG_PATCHES_JAR:$cp"; fi
  if [ "$1" = basic ] && [ -f "$UI_LOGIN_JAR" ]; then cp="$UI_LOGIN_JAR:$cp"; fi
  printf '%s' "$cp"
}

# Where the archive for classpath $1 is (one per classpath: the JVM maps it only for that one).
cds_archive() {
  printf '%s/%s.jsa' "$CDS_DIR" "$(printf '%s' "$1" | sha256sum | cut -c1-16)"
}

# The JVM flag that maps the archive for classpath $1, if the image has one.
cds_flag() {
  a=$(cds_archive "$1")
  if [ -f "$a" ]; then printf -- '-XX:SharedArchiveFile=%s' "$a"; fi
}

# java with the classpath $1, its archive and the module flags; the rest: Digdag's arguments.
java_digdag() {
  cp=$1
  shift
  # shellcheck disable=SC2086
  java $JAVA_MODULE_FLAGS $(cds_flag "$cp") $JAVA_OPTS -cp "$cp" io.digdag.cli.Main "$@"
}

digdag() {
  # shellcheck disable=SC2086
  exec java $JAVA_MODULE_FLAGS $(cds_flag "$DIGDAG_CP") $JAVA_OPTS -cp "$DIGDAG_CP" io.digdag.cli.Main "$@"
}

mode=${1:-server}
[ $# -gt 0 ] && shift
case "$mode" in
  server)
    role=${DIGDAG_ROLE:?set DIGDAG_ROLE to ui, workflow, scheduler or agent}
    props=$(assemble "$CONFIG_DIR/$role.properties")
    api_auth "$props"
    DIGDAG_CP=$(classpath "${DIGDAG_AUTH:-none}")
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
    # The servers' classpath: their archive serves these JVMs too (an init container is on the
    # scale-out's path).
    cp=$(classpath none)
    tries=${DIGDAG_DB_WAIT_TRIES:-90}
    i=0
    while :; do
      if [ "$mode" = migrate ]; then
        if java_digdag "$cp" migrate run -c "$props"; then exit 0; fi
      else
        out=$(java_digdag "$cp" migrate check -c "$props" 2>&1 || true)
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
  cds-archive)
    # At image build (the Dockerfile, as root): for each classpath a server can have, a
    # `server -m` (in-memory database, loopback) runs the workflow below through its REST API,
    # and the JVM writes the classes it loaded at exit; then a JVM with -Xshare:on proves the
    # archive maps. Digdag's servers use it from then on (cds_flag).
    mkdir -p "$CDS_DIR"
    chmod 0755 "$CDS_DIR"
    train=$(mktemp -d)
    cat > "$train/cds.dig" <<'DIG'
timezone: UTC
+template:
  echo>: ${moment(session_time).add(1, 'days').format('YYYY-MM-DD')} ${session_date_compact}
+fanout:
  loop>: 2
  _do:
    sh>: echo ${i}
+check:
  if>: ${1 + 1 == 2}
  _do:
    echo>: done
DIG
    tar -C "$train" -czf "$train/cds.tar.gz" cds.dig
    for auth in none basic; do
      cp=$(classpath "$auth")
      archive=$(cds_archive "$cp")
      [ -f "$archive" ] && continue
      # Port 0: the build may share the host's network; the log names the port bound.
      # shellcheck disable=SC2086
      java $JAVA_MODULE_FLAGS -Xmx512m -XX:ArchiveClassesAtExit="$archive" -cp "$cp" io.digdag.cli.Main server -m --bind 127.0.0.1 --port 0 > "$train/server.log" 2>&1 &
      pid=$!
      i=0
      until port=$(sed -n 's/.*Bound on 127\.0\.0\.1:\([0-9]*\) (api).*/\1/p' "$train/server.log") && [ -n "$port" ] && curl -fsS -o /dev/null "http://127.0.0.1:$port/api/version"; do
        i=$((i + 1))
        if [ "$i" -ge 180 ] || ! kill -0 "$pid" 2>/dev/null; then cat "$train/server.log" >&2; echo "digdag-entrypoint: cds-archive: the server did not start" >&2; exit 1; fi
        sleep 1
      done
      api=http://127.0.0.1:$port/api
      project=$(curl -fsS -X PUT -H 'Content-Type: application/gzip' --data-binary "@$train/cds.tar.gz" "$api/projects?project=cds&revision=1")
      project_id=$(printf '%s' "$project" | sed -n 's/^{"id":"\([0-9]*\)".*/\1/p')
      workflow_id=$(curl -fsS "$api/projects/$project_id/workflows?name=cds" | sed -n 's/^{"workflows":\[{"id":"\([0-9]*\)".*/\1/p')
      attempt=$(curl -fsS -X PUT -H 'Content-Type: application/json' -d "{\"workflowId\":\"$workflow_id\",\"sessionTime\":\"2026-01-01T00:00:00Z\",\"params\":{}}" "$api/attempts")
      attempt_id=$(printf '%s' "$attempt" | sed -n 's/^{"id":"\([0-9]*\)".*/\1/p')
      i=0
      until curl -fsS "$api/attempts/$attempt_id" | grep -q '"done":true'; do
        i=$((i + 1))
        if [ "$i" -ge 180 ]; then cat "$train/server.log" >&2; echo "digdag-entrypoint: cds-archive: the workflow did not finish" >&2; exit 1; fi
        sleep 1
      done
      curl -fsS "$api/attempts/$attempt_id" | grep -q '"success":true' || { cat "$train/server.log" >&2; echo "digdag-entrypoint: cds-archive: the workflow failed" >&2; exit 1; }
      kill -TERM "$pid"
      wait "$pid" || true
      # shellcheck disable=SC2086
      java $JAVA_MODULE_FLAGS -Xshare:on -XX:SharedArchiveFile="$archive" -cp "$cp" io.digdag.cli.Main --version > /dev/null
      chmod 0644 "$archive"
      echo "digdag-entrypoint: class data sharing archive for $cp: $(du -h "$archive" | cut -f1)"
    done
    rm -rf "$train"
    ;;
  *)
    digdag "$mode" "$@"
    ;;
esac
