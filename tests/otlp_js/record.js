// Records what the OpenTelemetry JS OTLP/HTTP exporters send as JSON, for
// tests/unit/test_otlp_decoder.py (test_what_the_opentelemetry_js_exporters_send_is_taken_whole):
// the bodies each /v1/* path received, written as requests.json to the directory given as the
// first argument. Everything stays on 127.0.0.1. To record again, in an empty directory:
//   npm install @opentelemetry/api @opentelemetry/api-logs @opentelemetry/resources \
//     @opentelemetry/sdk-trace-base @opentelemetry/exporter-trace-otlp-http \
//     @opentelemetry/sdk-logs @opentelemetry/exporter-logs-otlp-http \
//     @opentelemetry/sdk-metrics @opentelemetry/exporter-metrics-otlp-http
//   node record.js tests/otlp_js
const http = require("http");
const fs = require("fs");
const path = require("path");
const { BasicTracerProvider, SimpleSpanProcessor } = require("@opentelemetry/sdk-trace-base");
const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-http");
const { LoggerProvider, SimpleLogRecordProcessor } = require("@opentelemetry/sdk-logs");
const { OTLPLogExporter } = require("@opentelemetry/exporter-logs-otlp-http");
const { MeterProvider, PeriodicExportingMetricReader } = require("@opentelemetry/sdk-metrics");
const { OTLPMetricExporter } = require("@opentelemetry/exporter-metrics-otlp-http");
const { resourceFromAttributes } = require("@opentelemetry/resources");
const api = require("@opentelemetry/api");
const { SeverityNumber } = require("@opentelemetry/api-logs");

const out = process.argv[2];
const bodies = {};
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    (bodies[req.url] = bodies[req.url] || []).push(JSON.parse(Buffer.concat(chunks).toString()));
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end("{}");
  });
});

server.listen(0, "127.0.0.1", async () => {
  const base = `http://127.0.0.1:${server.address().port}`;
  const headers = { "x-api-key": "lk_recorded" };
  const resource = resourceFromAttributes({ "service.name": "checkout", "service.version": "1.2.3" });

  const tracerProvider = new BasicTracerProvider({
    resource,
    spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url: `${base}/v1/traces`, headers }))],
  });
  const tracer = tracerProvider.getTracer("checkout.tracer", "0.1.0");
  const parent = tracer.startSpan("GET /orders", { kind: api.SpanKind.SERVER, attributes: { "http.status_code": 500 } });
  const ctx = api.trace.setSpan(api.context.active(), parent);
  const child = tracer.startSpan(
    "SELECT orders",
    { kind: api.SpanKind.CLIENT, links: [{ context: parent.spanContext(), attributes: { why: "retry" } }] },
    ctx,
  );
  child.setAttributes({ "db.rows": 3, ratio: 0.5, cached: false, tags: ["a", "b"] });
  child.addEvent("exception", { "exception.message": "payment failed" });
  child.setStatus({ code: api.SpanStatusCode.ERROR, message: "payment failed" });
  child.end();
  parent.end();
  await tracerProvider.forceFlush();
  await tracerProvider.shutdown();

  const loggerProvider = new LoggerProvider({
    resource,
    processors: [new SimpleLogRecordProcessor({ exporter: new OTLPLogExporter({ url: `${base}/v1/logs`, headers }) })],
  });
  api.context.with(ctx, () => {
    loggerProvider.getLogger("checkout.logger").emit({
      severityNumber: SeverityNumber.ERROR,
      severityText: "ERROR",
      body: "payment failed",
      attributes: { "order.id": 42 },
      context: ctx,
    });
  });
  await loggerProvider.forceFlush();
  await loggerProvider.shutdown();

  const reader = new PeriodicExportingMetricReader({
    exporter: new OTLPMetricExporter({ url: `${base}/v1/metrics`, headers }),
    exportIntervalMillis: 60000,
  });
  const meterProvider = new MeterProvider({ resource, readers: [reader] });
  const meter = meterProvider.getMeter("checkout.meter");
  meter.createCounter("orders").add(3, { route: "/orders" });
  meter.createHistogram("latency", { unit: "ms" }).record(12.5, { route: "/orders" });
  meter.createUpDownCounter("inflight").add(-1);
  meter.createObservableGauge("temperature").addCallback((result) => result.observe(21.5));
  await meterProvider.forceFlush();
  await meterProvider.shutdown();

  server.close();
  fs.mkdirSync(out, { recursive: true });
  const version = require("@opentelemetry/exporter-trace-otlp-http/package.json").version;
  fs.writeFileSync(path.join(out, "requests.json"), JSON.stringify({ exporterVersion: version, requests: bodies }, null, 1) + "\n");
  console.log(Object.keys(bodies));
});
