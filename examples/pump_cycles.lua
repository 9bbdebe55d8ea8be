-- pump_cycles.lua — start/stop cycles of a pump, from its motor current.
--
-- A pump that starts too often is short-cycling (a leaking check valve, a
-- waterlogged pressure tank, a level switch set too close); one that runs
-- too long cannot reach its target (a dry well, a broken pipe, a worn
-- impeller).  Both wear the motor long before anything trips, and both are
-- plain to see in the current alone.
--
-- Input: on_batch(dev) with the pump's `current` (A).  Running is decided
-- with hysteresis, so a noisy current at the threshold does not count as
-- many starts: running above ON_A, stopped below OFF_A.  Times come from the
-- batches (the gateway's read time).
--
-- Outputs (tags with `script: pump-cycles`): running, starts_total,
-- starts_per_hour (starts in the last hour), last_run_s, last_idle_s,
-- duty_pct (running share of the last hour).
--
-- Alarms (declared in the config): short_cycling when more than
-- MAX_STARTS_PER_H starts fall into the last hour; long_run while one run
-- lasts longer than MAX_RUN_S (checked on the timer too, so a pump that runs
-- on with a steady current, which a deadband would not publish, is seen).
--
-- Settings: edit them here.

local ON_A, OFF_A = 5.0, 3.0      -- A
local MAX_STARTS_PER_H = 6
local MAX_RUN_S = 30 * 60
local HOUR = 3600

local running = false
local started_at, stopped_at = nil, nil
local starts_total = 0
local starts = {}                 -- start times within the last hour, oldest first
local runs = {}                   -- {from, to} run intervals within the last hour
local last_run_s, last_idle_s = nil, nil
local now_t = nil

local function prune(t)
  while #starts > 0 and starts[1] <= t - HOUR do table.remove(starts, 1) end
  while #runs > 0 and runs[1][2] <= t - HOUR do table.remove(runs, 1) end
end

local function duty(t)
  local on = 0
  for _, r in ipairs(runs) do on = on + (r[2] - math.max(r[1], t - HOUR)) end
  if running and started_at then on = on + (t - math.max(started_at, t - HOUR)) end
  return 100 * on / HOUR
end

local function publish(t)
  prune(t)
  fb.set("running", running)
  fb.set("starts_total", starts_total)
  fb.set("starts_per_hour", #starts)
  fb.set("last_run_s", last_run_s)      -- nil until the first run ended: no value yet
  fb.set("last_idle_s", last_idle_s)
  fb.set("duty_pct", duty(t))
  fb.alarm("short_cycling", #starts > MAX_STARTS_PER_H, #starts)
  local run_s = (running and started_at) and t - started_at or 0
  fb.alarm("long_run", run_s > MAX_RUN_S, run_s)
end

function on_batch(dev)
  local a, t = dev.values.current, dev.ts
  if a == nil then return end     -- Bad current: no decision on it
  now_t = t
  if not running and a > ON_A then
    running = true
    started_at = t
    if stopped_at then last_idle_s = t - stopped_at end
    starts_total = starts_total + 1
    starts[#starts + 1] = t
  elseif running and a < OFF_A then
    running = false
    stopped_at = t
    last_run_s = t - started_at
    runs[#runs + 1] = {started_at, t}
  end
  publish(t)
end

function on_timer(now)
  if now_t == nil then return end  -- no current yet
  publish(now)
end
