"""The Lua scripts that make Wukong's storage steps atomic on the metadata store (MDS).

Each script is one round trip and runs alone on the server, which is what makes fan-in counters,
once-only results, job ends and invocation claims safe against duplicated or retried executors.
:class:`wukong.storage.RedisStores` loads them once per process and calls them by SHA.
"""

from __future__ import annotations

#: Jobs that were cleaned up, scored by when: a straggling or retried executor of such a job
#: must not run or write again. Not namespaced by job (it is the registry of ended jobs);
#: entries older than ENDED_JOBS_KEEP seconds are trimmed at each cleanup.
ENDED_JOBS = "wukong:ended-jobs"
ENDED_JOBS_KEEP = 3600

#: Scripts that must run even on a server that is out of memory (maxmemory with noeviction): a
#: job's failure must still be recorded, and its cleanup must still run, which frees the memory.
#: They are loaded with Redis 7's script flag; a server without flags (Redis 6) gets them plain.
ALLOW_OOM = frozenset({"end_job", "tombstone"})
ALLOW_OOM_SHEBANG = "#!lua flags=allow-oom\n"

# Body shared by the two fan-in scripts. For counter i (KEYS[k0 + 2i - 1], its claimer KEYS[k0 + 2i])
# it sets the upstream's bit and decides whether this call claims the dependent:
# - the call that completes the counter claims it, and records the claiming invocation (``me``,
#   the task id its invocation started from) so that a *retry* of that invocation, which finds
#   the counter already complete, claims it again (the first attempt may have died before
#   running it);
# - any other call (a duplicate, a retry of a non-claimer, an earlier upstream) claims nothing,
#   so each fan-in task is claimed by exactly one invocation lineage.
_FAN_IN_LOOP = """
local out = {}
local n = (#KEYS - k0) / 2
for i = 1, n do
  local counter, claimer = KEYS[k0 + 2 * i - 1], KEYS[k0 + 2 * i]
  local slot = ARGV[a0 + 2 * i - 1]
  local need = tonumber(ARGV[a0 + 2 * i])
  local was = redis.call('SETBIT', counter, slot, 1)
  redis.call('EXPIRE', counter, ttl)
  out[i] = 0
  if redis.call('BITCOUNT', counter) == need then
    if was == 0 then
      out[i] = 1
      redis.call('SET', claimer, me, 'EX', ttl)
    elseif retry and redis.call('GET', claimer) == me then
      out[i] = 1
    end
  end
end
return out
"""

# KEYS: counter/claimer pairs. ARGV: ttl, me, retry (0/1), then (slot, need) per counter.
FAN_IN = """
local ttl, me, retry = ARGV[1], ARGV[2], ARGV[3] == '1'
local k0, a0 = 0, 3
""" + _FAN_IN_LOOP

# The same after storing the upstream's value (KEYS[1]) on this server: one EVALSHA costs about
# half the client CPU and wall time of a SET + EVALSHA pipeline in redis-py, and the value is
# still written before any counter moves. ARGV: ttl, value, me, retry, then (slot, need) pairs.
SET_FAN_IN = """
local ttl, me, retry = ARGV[1], ARGV[3], ARGV[4] == '1'
redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
local k0, a0 = 1, 4
""" + _FAN_IN_LOOP

# Delayed I/O: holds every counter of KEYS (counter/waiter pairs) for invocation ``me``, or none
# of them when another invocation already holds one (returns nil); a retry of the holder holds
# again. Returns (BITCOUNT, our bit) per counter. At most one waiter per counter is what makes
# delayed I/O deadlock-free (wukong.decisions). ARGV: ttl, me, then our slot per counter.
HOLD_COUNTERS = """
local ttl, me = ARGV[1], ARGV[2]
local n = #KEYS / 2
for i = 1, n do
  local w = redis.call('GET', KEYS[2 * i])
  if w and w ~= me then return false end
end
local out = {}
for i = 1, n do
  redis.call('SET', KEYS[2 * i], me, 'EX', ttl)
  out[2 * i - 1] = redis.call('BITCOUNT', KEYS[2 * i - 1])
  out[2 * i] = redis.call('GETBIT', KEYS[2 * i - 1], ARGV[2 + i])
end
return out
"""

# Claims an invocation's start task before it runs: 1 run it, 0 a duplicate (an invocation of
# this task with this attempt number or a later one already started), 2 the job has ended.
# A retry carries a higher attempt number than the invocation that died, so it may run.
# KEYS: started, ended, ENDED_JOBS. ARGV: attempt, ttl, job id.
CLAIM_START = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('ZSCORE', KEYS[3], ARGV[3]) then return 2 end
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# 1 if the job failed, was cancelled, or was already cleaned up. KEYS: ended, ENDED_JOBS. ARGV: job id.
JOB_ENDED = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
return 0
"""

# Counts one final result, once per output however often it is stored; the call that counts the
# last one pushes the done event. The value itself is SET (NX) by the same pipeline just before:
# passing 100 MB through a Lua argument took 3-4x as long as a plain SET (measured). A job that
# has ended (failed, cancelled, cleaned up) takes no result: the value just set is deleted, so an
# executor whose task returned after a cancel's cleanup leaves no key behind (-1).
# KEYS: outputs_done (a set of task ids), events, the result's key, ended, ENDED_JOBS.
# ARGV: task id, n_outputs, ttl, done event, job id.
STORE_RESULT = """
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('ZSCORE', KEYS[5], ARGV[5]) then
  redis.call('DEL', KEYS[3])
  return -1
end
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  if redis.call('SCARD', KEYS[1]) == tonumber(ARGV[2]) then
    redis.call('RPUSH', KEYS[2], ARGV[4])
    redis.call('EXPIRE', KEYS[2], ARGV[3])
    return 1
  end
end
return 0
"""

# Adds an executor's counts to the job's statistics hash in one command, unless the job was
# already cleaned up (a straggler's late report would otherwise outlive the job).
# KEYS: stats, ENDED_JOBS. ARGV: ttl, job id, then (name, amount) pairs.
ADD_COUNTS = """
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# Marks the job ended (failed or cancelled); only the first such call pushes its event. A job
# already cleaned up (in ENDED_JOBS) is left alone: a late cancel must not recreate its keys.
# KEYS: ended, events, ENDED_JOBS. ARGV: reason, event, ttl, job id.
END_JOB = """
if redis.call('ZSCORE', KEYS[3], ARGV[4]) then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[3]) then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
"""

# Records a cleaned-up job in ENDED_JOBS (KEYS[1]) and forgets entries older than ARGV[3] seconds.
# ARGV: job id, now.
TOMBSTONE = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
return 1
"""

# Sets a hash field only while the hash exists (KEYS[1]; ARGV: field, value): a late mark for a job
# already cleaned up must not recreate its key.
HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""

SCRIPTS: dict[str, str] = {
    "hset_if_exists": HSET_IF_EXISTS,
    "fan_in": FAN_IN,
    "set_fan_in": SET_FAN_IN,
    "hold_counters": HOLD_COUNTERS,
    "claim_start": CLAIM_START,
    "job_ended": JOB_ENDED,
    "store_result": STORE_RESULT,
    "add_counts": ADD_COUNTS,
    "end_job": END_JOB,
    "tombstone": TOMBSTONE,
}
