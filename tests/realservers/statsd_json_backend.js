/*
 * An Etsy statsd backend for the tests: at each statsd flush, print what statsd holds as
 * one line "ZIBRATO-STATSD-FLUSH {json}" on standard output. Unlike the console backend it
 * shows every timer value (util.inspect cuts arrays at 100) and the sample-rate-corrected
 * timer counts (timer_counters), which the management port does not show at all.
 */
exports.init = function (startupTime, config, events) {
  events.on('flush', function (timestamp, metrics) {
    process.stdout.write('ZIBRATO-STATSD-FLUSH ' + JSON.stringify({
      timestamp: timestamp,
      counters: metrics.counters,
      timers: metrics.timers,
      timer_counters: metrics.timer_counters,
      gauges: metrics.gauges,
    }) + '\n');
  });
  return true;
};
