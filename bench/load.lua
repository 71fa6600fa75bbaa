-- wrk script for `make bench`: POST one error event; thread i talks to edge worker i (BENCH_PORTS);
-- done() prints one JSON line with the merged latency histogram's percentiles.
local ports = {}
for port in string.gmatch(os.getenv("BENCH_PORTS"), "%d+") do table.insert(ports, port) end
local next_port = 0

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Api-Key"] = os.getenv("BENCH_KEY")

function setup(thread)
  next_port = next_port % #ports + 1
  thread.addr = wrk.lookup("127.0.0.1", ports[next_port])[1]
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
