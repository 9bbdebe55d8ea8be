-- oee.lua — Overall Equipment Effectiveness of one machine, per shift.
--
--   availability = run time / planned time
--   performance  = ideal cycle time x parts made / run time
--   quality      = good parts / parts made
--   OEE          = availability x performance x quality
--
-- Inputs: on_batch(dev) with the machine's processed values (the script's
-- `devices:`):
--   running  bool      the machine runs (an unset tag counts as stopped)
--   parts    counter   every part made, good or not
--   scrap    counter   rejected parts
-- The counters are PLC counters: they can wrap or be reset to 0, so only
-- steps forward are added (a step back starts a new count).  Time comes from
-- the batches (the gateway's time of each read), so a slow or stalled poll
-- never counts as run time it did not see.
--
-- Outputs (tags with `script: oee`, set on every timer tick): availability,
-- performance, quality, oee (all in %), parts_shift, good_shift.  Before the
-- first part of a shift, performance, quality and oee are Bad (no value):
-- there is nothing to compute them from.
--
-- Alarm `low_oee` (declared in the config): OEE under LOW_OEE once the shift
-- has run WARMUP_S.
--
-- Settings: edit them here.

local IDEAL_CYCLE_S = 0.8          -- seconds per part at rated speed
local SHIFT_S = 8 * 3600           -- shift length
local SHIFT_START_S = 6 * 3600     -- the first shift of the day starts at 06:00 UTC
local LOW_OEE = 60                 -- %
local WARMUP_S = 15 * 60           -- no OEE alarm in the first 15 minutes of a shift

local shift = nil                  -- number of the current shift
local shift_t0 = nil               -- its start (s since the epoch)
local run_s, parts, scrap = 0, 0, 0
local last_t, last_running, last_parts, last_scrap = nil, false, nil, nil

local function shift_of(t)
  return math.floor((t - SHIFT_START_S) / SHIFT_S)
end

local function new_shift(t)
  shift = shift_of(t)
  shift_t0 = shift * SHIFT_S + SHIFT_START_S
  run_s, parts, scrap = 0, 0, 0
  fb.log(string.format("shift %d starts (%s UTC)", shift, os and os.date("!%H:%M", shift_t0) or tostring(shift_t0)))
end

-- a counter's step since the last reading: its value after a reset or wrap
local function step(now, before)
  if now == nil then return 0, before end
  if before == nil then return 0, now end
  if now >= before then return now - before, now end
  return now, now
end

function on_batch(dev)
  local t = dev.ts
  if shift == nil or shift_of(t) ~= shift then new_shift(t) end
  -- the time since the last batch ran if the machine was running then
  if last_t ~= nil and last_running and t > last_t then
    run_s = run_s + math.min(t - last_t, 60) -- a gap of over a minute is not counted as seen
  end
  last_t = t
  last_running = dev.values.running == true
  local d
  d, last_parts = step(dev.values.parts, last_parts)
  parts = parts + d
  d, last_scrap = step(dev.values.scrap, last_scrap)
  scrap = scrap + d
end

function on_timer(now)
  if shift == nil then return end  -- no data yet: the outputs stay without value
  local planned = now - shift_t0
  local availability = planned > 0 and math.min(run_s / planned, 1) or nil
  local performance = (run_s > 0 and parts > 0) and IDEAL_CYCLE_S * parts / run_s or nil
  local quality = parts > 0 and (parts - math.min(scrap, parts)) / parts or nil
  local oee = (availability and performance and quality) and availability * performance * quality or nil
  local function pct(x) return x and x * 100 or nil end
  fb.set("availability", pct(availability))
  fb.set("performance", pct(performance))
  fb.set("quality", pct(quality))
  fb.set("oee", pct(oee))
  fb.set("parts_shift", math.floor(parts))
  fb.set("good_shift", math.floor(parts - math.min(scrap, parts)))
  if oee ~= nil then
    fb.alarm("low_oee", planned > WARMUP_S and oee * 100 < LOW_OEE, oee * 100)
  end
end
