-- json_post.lua's workload, plus a time line of the replies: completed 2xx
-- replies per TIMELINE_MS (50) window of wall time, and the first reply of
-- each traffic epoch (the epoch read from the x-stratos-receipt header), so
-- throughput can be lined up with the node's epoch changes.
-- done() writes "w WINDOW_START_MS COUNT" and "e EPOCH FIRST_MS" lines to
-- TIMELINE_OUT (after json_post.lua's WRKSTATS line on stdout).
--   TIMELINE_OUT=/tmp/t.txt wrk -t2 -c64 -d10s -s benches/peers/timeline.lua URL
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } timeline_timespec;
int clock_gettime(int clk, timeline_timespec *ts);
]]
local peers_dir = os.getenv("PEERS_DIR") or "/work/shared/peers"
dofile(peers_dir .. "/http/json_post.lua")

local window_ms = tonumber(os.getenv("TIMELINE_MS") or "50")
local ts = ffi.new("timeline_timespec")
local json_setup, json_done = setup, done
local all_threads = {}

-- Per thread: completions per window, first reply time per epoch.
windows = {}
epochs = {}

function setup(thread)
  json_setup(thread)
  all_threads[#all_threads + 1] = thread
end

local function now_ms()
  ffi.C.clock_gettime(0, ts) -- CLOCK_REALTIME
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

-- RATE (requests/s, all threads together; needs PEERS_THREADS = wrk's -t):
-- requests are paced to it, each thread sending on its own schedule, so two
-- builds can be compared at the same load (CPU per request without the
-- batching a saturated node gets). Unset: as fast as the node answers.
local rate = tonumber(os.getenv("RATE") or "")
if rate then
  local period = (tonumber(os.getenv("PEERS_THREADS") or "2")) * 1000 / rate
  local slot
  function delay()
    local now = now_ms()
    if slot == nil or slot < now - 1000 then slot = now end
    slot = slot + period
    return math.max(0, math.floor(slot - now))
  end
end

function response(status, headers, body)
  local ms = math.floor(now_ms())
  if status >= 200 and status < 300 then
    local w = ms - ms % window_ms
    windows[w] = (windows[w] or 0) + 1
  end
  local receipt = headers["x-stratos-receipt"] or headers["X-Stratos-Receipt"]
  if receipt then
    local e = tonumber(receipt:match('"epoch":(%d+)'))
    if e and (epochs[e] == nil or ms < epochs[e]) then epochs[e] = ms end
  end
end

function done(summary, latency, requests)
  json_done(summary, latency, requests)
  local out = os.getenv("TIMELINE_OUT")
  if not out then return end
  local w, e = {}, {}
  for _, t in ipairs(all_threads) do
    for k, v in pairs(t:get("windows")) do w[k] = (w[k] or 0) + v end
    for k, v in pairs(t:get("epochs")) do
      if e[k] == nil or v < e[k] then e[k] = v end
    end
  end
  local f = assert(io.open(out, "w"))
  for k, v in pairs(w) do f:write(string.format("w %d %d\n", k, v)) end
  for k, v in pairs(e) do f:write(string.format("e %d %d\n", k, v)) end
  f:close()
end
