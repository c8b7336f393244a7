//! Logging and Prometheus metrics shared by every component.
//!
//! ```text
//!  api-server / store / xds  --observe-->  Metrics (prometheus-client registry)
//!                                              |
//!                     diagnostics :5680/metrics  <-- encode()
//! ```

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sets up `tracing` output on stderr. `level` is a filter such as `info` or
/// `kuma=debug,info`; `json` switches to one JSON object per line.
pub fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless; ignore it.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route template (`/meshes/{mesh}/{plural}/{name}`), never the raw path,
    /// so label cardinality stays bounded.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub operation: &'static str,
    pub resource_type: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50µs .. ~3s
    Histogram::new(exponential_buckets(0.00005, 3.0, 11))
}

/// The control plane's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<HttpLabels, Histogram, fn() -> Histogram>,
    store_latency: Family<StoreLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let store_latency =
            Family::<StoreLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "api_server_http_requests",
            "REST API requests by route and status",
            http_requests.clone(),
        );
        registry.register_with_unit(
            "api_server_http_request_duration",
            "REST API request latency by route and status",
            prometheus_client::registry::Unit::Seconds,
            http_latency.clone(),
        );
        registry.register_with_unit(
            "store_operation_duration",
            "Resource store operation latency by operation and resource type",
            prometheus_client::registry::Unit::Seconds,
            store_latency.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            http_requests,
            http_latency,
            store_latency,
        }
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = HttpLabels {
            method: method.to_string(),
            route: route.to_string(),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_store(
        &self,
        operation: &'static str,
        resource_type: &'static str,
        elapsed: Duration,
    ) {
        self.store_latency
            .get_or_create(&StoreLabels {
                operation,
                resource_type,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Lets other components register their own metrics.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut r);
    }

    /// The Prometheus text exposition of everything registered.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_observations() {
        let m = Metrics::new();
        m.observe_http("GET", "/meshes", 200, Duration::from_millis(2));
        m.observe_store("get", "Mesh", Duration::from_micros(80));
        let text = m.encode();
        assert!(
            text.contains(
                "api_server_http_requests_total{method=\"GET\",route=\"/meshes\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "store_operation_duration_seconds_count{operation=\"get\",resource_type=\"Mesh\"} 1"
            ),
            "{text}"
        );
    }
}
