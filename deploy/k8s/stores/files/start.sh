#!/bin/sh
# Start Redis with one user per kind of process, each allowed only its own keys and commands.
# The passwords come from the environment (compose's .env) and go into an ACL file on the
# tmpfs, never onto a command line (ps, `docker inspect`). Users:
#   default        off: a client that does not sign in can do nothing. It keeps every right,
#                  because Redis replays the AOF's transactions (MULTI/EXEC) as `default` and
#                  checks its rights then: a PING-only `default` silently drops them on restart
#                  (redis/redis#14541, fixed after 7.4; valkey-io/valkey#3983).
#   healthcheck    no password (any is accepted), PING only (the container healthcheck)
#   admin          REDIS_PASSWORD, everything (an operator's redis-cli --user admin)
#   mlprod-api     task records, results and their events, worker readiness, upload rate limits
#   mlprod-worker  task records, results and their events, worker readiness (also ml-beat)
#   mlprod-client  the web client's own keys only: sessions, history, sign-in limits
set -eu
umask 077
ACL=${REDIS_ACLFILE:-/tmp/users.acl}
COMMANDS='-@all +@read +@write +@keyspace +@scripting +@pubsub +@transaction +@connection -@dangerous'
TASKS='~mlprod:task:* ~mlprod:ready:* ~mlprod:webhook:* ~mlprod:deliveries:* ~celery-task-meta-* &celery-task-meta-*'
{
  echo "user default off nopass ~* &* +@all"
  echo "user healthcheck on nopass resetchannels -@all +ping"
  echo "user admin on >${REDIS_PASSWORD:?} ~* &* +@all"
  echo "user mlprod-api on >${REDIS_API_PASSWORD:?} resetchannels $TASKS ~mlprod:rate:* $COMMANDS"
  echo "user mlprod-worker on >${REDIS_WORKER_PASSWORD:?} resetchannels $TASKS $COMMANDS"
  echo "user mlprod-client on >${REDIS_CLIENT_PASSWORD:?} resetchannels ~mlprod:client:* $COMMANDS"
} > "$ACL"
unset REDIS_PASSWORD REDIS_API_PASSWORD REDIS_WORKER_PASSWORD REDIS_CLIENT_PASSWORD
exec redis-server "${REDIS_CONF:-/etc/redis/redis.conf}" --aclfile "$ACL" \
  --maxmemory "${REDIS_MAXMEMORY:-512mb}"
