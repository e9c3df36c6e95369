-- reporting_day: the one definition of the reporting day, used by every model.
-- Grain: none (macros for this connection). Parameters: $timezone (COMET_LEDGER_TIMEZONE, an IANA zone),
-- $today (the reporting day that holds "now", pipelines/lib/clock.py, read once when the connection is bound).
-- The lake keeps UTC instants and UTC days only; a reporting day is the calendar day of an instant in
-- the reporting zone, so changing the zone changes no lake file, only what the warehouse derives.
--   reporting_day(ts)       the reporting day of instant ts (TIMESTAMPTZ)
--   reporting_day_start(d)  the first instant of reporting day d (a day is 23 or 25 hours long when
--                           the zone changes its clocks that day)
--   reporting_zone()        the zone this connection was bound to
--   is_partial_day(d)       reporting day d is not over: it is today (data so far) or later. A row built
--                           while its day was partial says so until a run rebuilds that day after it ended
--                           (the daily run re-pulls the days before the one it runs for).
SET VARIABLE reporting_zone = $timezone::VARCHAR;
CREATE OR REPLACE TEMP MACRO reporting_zone() AS getvariable('reporting_zone');
CREATE OR REPLACE TEMP MACRO reporting_day(ts) AS CAST(timezone(getvariable('reporting_zone'), ts::TIMESTAMPTZ) AS DATE);
CREATE OR REPLACE TEMP MACRO reporting_day_start(d) AS timezone(getvariable('reporting_zone'), d::DATE::TIMESTAMP);
SET VARIABLE reporting_today = $today::DATE;
CREATE OR REPLACE TEMP MACRO is_partial_day(d) AS d::DATE >= getvariable('reporting_today');
