# The stratosdb workloads as request templates for the harness's generic wrk
# script ($PEERS_DIR/http/json_post.lua), shared by run.sh and cpu.sh.
# Sourced; keys are ${SDB_PREFIX:-bench}%08d (no '/': the key goes into the path).

# put_env COLLECTION: a PUT of a 1 KiB document to a random key.
put_env() {
    export HTTP_METHOD=PUT HTTP_PATH="/v1/collections/$1/docs/{{key}}" HTTP_BODY='{"v":"{{pad:1024}}"}' \
        KEY_PREFIX=${SDB_PREFIX:-bench}
}

# get_env COLLECTION [QUERY]: a GET of a random key (default consistency:
# linearizable; QUERY e.g. "?consistency=follower").
get_env() {
    export HTTP_METHOD=GET HTTP_PATH="/v1/collections/$1/docs/{{key}}${2:-}" KEY_PREFIX=${SDB_PREFIX:-bench}
    unset HTTP_BODY
}
