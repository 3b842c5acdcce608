-- wrk -s report.lua: prints one machine-readable line when the run is done, for compare.sh.
-- Only done() is defined: a response() hook would make wrk parse every response into Lua and
-- slow the load generator down, which shares its core with the upstream.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
