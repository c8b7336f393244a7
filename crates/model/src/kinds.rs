//! The closed set of resource kinds and one descriptor per kind.
//!
//! Everything that differs between kinds (REST path, kumactl words, scope, KDS
//! direction, read-only rules) lives in [`KindDescriptor`], so the API server,
//! the stores, KDS and kumactl never match on kind names themselves.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether a kind lives inside a mesh or next to meshes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    Mesh,
    Global,
}

/// How the resource's content is laid out in Kuma's REST JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecLayout {
    /// The protobuf-era kinds (Mesh, Dataplane, Zone, Secret, insights): spec
    /// fields sit at the top level beside `type`, `name` and `mesh`.
    Inline,
    /// The current kinds: the content is under `spec` (and `status` where the
    /// kind has one).
    Nested,
}

/// Which targetRef sections a policy accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyShape {
    pub to: bool,
    pub from: bool,
    pub rules: bool,
}

/// KDS direction flags, as Kuma defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KdsFlags(u8);

impl KdsFlags {
    pub const NONE: KdsFlags = KdsFlags(0);
    /// Written on the global, synced down to every zone.
    pub const GLOBAL_TO_ZONES: KdsFlags = KdsFlags(1);
    /// Written in a zone, synced up to the global.
    pub const ZONE_TO_GLOBAL: KdsFlags = KdsFlags(1 << 1);
    /// Synced up from a zone, then on to the other zones.
    pub const SYNCED_ACROSS_ZONES: KdsFlags = KdsFlags(1 << 2);
    /// Computed by the global itself.
    pub const PROVIDED_BY_GLOBAL: KdsFlags = KdsFlags(1 << 3);
    /// Computed by a zone itself.
    pub const PROVIDED_BY_ZONE: KdsFlags = KdsFlags(1 << 4);

    pub const fn union(self, other: KdsFlags) -> KdsFlags {
        KdsFlags(self.0 | other.0)
    }
    pub const fn contains(self, other: KdsFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
}

/// Static facts about one kind.
#[derive(Debug)]
pub struct KindDescriptor {
    pub kind: ResourceKind,
    /// `type` in Kuma's JSON, e.g. `MeshTimeout`.
    pub name: &'static str,
    /// Path segment in the REST API, e.g. `meshtimeouts`.
    pub plural: &'static str,
    /// `kumactl get <singular> NAME`; empty for kinds kumactl does not name.
    pub kumactl_arg: &'static str,
    /// `kumactl get <list>`; empty for kinds kumactl does not list.
    pub kumactl_list_arg: &'static str,
    pub short_name: &'static str,
    pub singular_display: &'static str,
    pub plural_display: &'static str,
    pub scope: Scope,
    pub kds: KdsFlags,
    /// Computed by the control plane; REST writes are refused.
    pub read_only: bool,
    /// Only admins may read or write (secrets).
    pub admin_only: bool,
    pub layout: SpecLayout,
    /// `Some` for targetRef policies.
    pub policy: Option<PolicyShape>,
    /// Whether the kind carries a `status` the control plane fills.
    pub has_status: bool,
}

macro_rules! kinds {
    ($(
        $kind:ident {
            plural: $plural:literal, arg: $arg:literal, list: $list:literal, short: $short:literal,
            display: ($sd:literal, $pd:literal), scope: $scope:ident, kds: [$($flag:ident),*],
            read_only: $ro:literal, admin_only: $ao:literal, layout: $layout:ident,
            policy: $policy:expr, status: $status:literal $(,)?
        }
    ),* $(,)?) => {
        /// Every kind of resource the control plane knows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ResourceKind { $($kind),* }

        impl ResourceKind {
            /// All kinds, in a stable order.
            pub const ALL: &'static [ResourceKind] = &[$(ResourceKind::$kind),*];

            pub fn descriptor(self) -> &'static KindDescriptor {
                match self {
                    $(ResourceKind::$kind => {
                        const D: KindDescriptor = KindDescriptor {
                            kind: ResourceKind::$kind,
                            name: stringify!($kind),
                            plural: $plural,
                            kumactl_arg: $arg,
                            kumactl_list_arg: $list,
                            short_name: $short,
                            singular_display: $sd,
                            plural_display: $pd,
                            scope: Scope::$scope,
                            kds: KdsFlags::NONE$(.union(KdsFlags::$flag))*,
                            read_only: $ro,
                            admin_only: $ao,
                            layout: SpecLayout::$layout,
                            policy: $policy,
                            has_status: $status,
                        };
                        &D
                    })*
                }
            }
        }
    };
}

const fn policy(to: bool, from: bool, rules: bool) -> Option<PolicyShape> {
    Some(PolicyShape { to, from, rules })
}

kinds! {
    Mesh { plural: "meshes", arg: "mesh", list: "meshes", short: "m",
        display: ("Mesh", "Meshes"), scope: Global, kds: [GLOBAL_TO_ZONES],
        read_only: false, admin_only: false, layout: Inline, policy: None, status: false },
    Dataplane { plural: "dataplanes", arg: "dataplane", list: "dataplanes", short: "dp",
        display: ("Dataplane", "Dataplanes"), scope: Mesh, kds: [ZONE_TO_GLOBAL],
        read_only: false, admin_only: false, layout: Inline, policy: None, status: false },
    DataplaneInsight { plural: "dataplane-insights", arg: "", list: "", short: "",
        display: ("Dataplane Insight", "Dataplane Insights"), scope: Mesh, kds: [ZONE_TO_GLOBAL],
        read_only: true, admin_only: false, layout: Inline, policy: None, status: false },
    Zone { plural: "zones", arg: "zone", list: "zones", short: "z",
        display: ("Zone", "Zones"), scope: Global, kds: [PROVIDED_BY_GLOBAL, PROVIDED_BY_ZONE],
        read_only: false, admin_only: false, layout: Inline, policy: None, status: false },
    ZoneInsight { plural: "zone-insights", arg: "", list: "", short: "",
        display: ("Zone Insight", "Zone Insights"), scope: Global, kds: [PROVIDED_BY_GLOBAL, PROVIDED_BY_ZONE],
        read_only: true, admin_only: false, layout: Inline, policy: None, status: false },
    MeshInsight { plural: "mesh-insights", arg: "", list: "", short: "",
        display: ("Mesh Insight", "Mesh Insights"), scope: Global, kds: [PROVIDED_BY_GLOBAL],
        read_only: true, admin_only: false, layout: Inline, policy: None, status: false },
    ServiceInsight { plural: "service-insights", arg: "", list: "", short: "",
        display: ("Service Insight", "Service Insights"), scope: Mesh, kds: [GLOBAL_TO_ZONES],
        read_only: true, admin_only: false, layout: Inline, policy: None, status: false },
    Secret { plural: "secrets", arg: "secret", list: "secrets", short: "",
        display: ("Secret", "Secrets"), scope: Mesh, kds: [GLOBAL_TO_ZONES, PROVIDED_BY_ZONE],
        read_only: false, admin_only: true, layout: Inline, policy: None, status: false },
    GlobalSecret { plural: "global-secrets", arg: "global-secret", list: "global-secrets", short: "",
        display: ("Global Secret", "Global Secrets"), scope: Global, kds: [GLOBAL_TO_ZONES],
        read_only: false, admin_only: true, layout: Inline, policy: None, status: false },
    MeshService { plural: "meshservices", arg: "meshservice", list: "meshservices", short: "msvc",
        display: ("Mesh Service", "Mesh Services"), scope: Mesh, kds: [ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: None, status: true },
    MeshExternalService { plural: "meshexternalservices", arg: "meshexternalservice", list: "meshexternalservices", short: "extsvc",
        display: ("Mesh External Service", "Mesh External Services"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL],
        read_only: false, admin_only: false, layout: Nested, policy: None, status: true },
    MeshMultiZoneService { plural: "meshmultizoneservices", arg: "meshmultizoneservice", list: "meshmultizoneservices", short: "mzsvc",
        display: ("Mesh Multi Zone Service", "Mesh Multi Zone Services"), scope: Mesh, kds: [GLOBAL_TO_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: None, status: true },
    HostnameGenerator { plural: "hostnamegenerators", arg: "hostnamegenerator", list: "hostnamegenerators", short: "hg",
        display: ("Hostname Generator", "Hostname Generators"), scope: Global, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL],
        read_only: false, admin_only: false, layout: Nested, policy: None, status: false },
    MeshIdentity { plural: "meshidentities", arg: "meshidentity", list: "meshidentities", short: "mid",
        display: ("Mesh Identity", "Mesh Identities"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL],
        read_only: false, admin_only: false, layout: Nested, policy: None, status: true },
    MeshTrust { plural: "meshtrusts", arg: "meshtrust", list: "meshtrusts", short: "mtrust",
        display: ("Mesh Trust", "Mesh Trusts"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL],
        read_only: false, admin_only: false, layout: Nested, policy: None, status: true },
    MeshOpenTelemetryBackend { plural: "meshopentelemetrybackends", arg: "meshopentelemetrybackend", list: "meshopentelemetrybackends", short: "motb",
        display: ("Mesh OpenTelemetry Backend", "Mesh OpenTelemetry Backends"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL],
        read_only: false, admin_only: false, layout: Nested, policy: None, status: false },
    MeshZoneAddress { plural: "meshzoneaddresses", arg: "meshzoneaddress", list: "meshzoneaddresses", short: "mza",
        display: ("Mesh Zone Address", "Mesh Zone Addresses"), scope: Mesh, kds: [ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: None, status: false },
    Workload { plural: "workloads", arg: "workload", list: "workloads", short: "wl",
        display: ("Workload", "Workloads"), scope: Mesh, kds: [ZONE_TO_GLOBAL],
        read_only: false, admin_only: false, layout: Nested, policy: None, status: false },
    MeshAccessLog { plural: "meshaccesslogs", arg: "meshaccesslog", list: "meshaccesslogs", short: "mal",
        display: ("Mesh Access Log", "Mesh Access Logs"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(true, false, true), status: false },
    MeshCircuitBreaker { plural: "meshcircuitbreakers", arg: "meshcircuitbreaker", list: "meshcircuitbreakers", short: "mcb",
        display: ("Mesh Circuit Breaker", "Mesh Circuit Breakers"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(true, false, true), status: false },
    MeshFaultInjection { plural: "meshfaultinjections", arg: "meshfaultinjection", list: "meshfaultinjections", short: "mfi",
        display: ("Mesh Fault Injection", "Mesh Fault Injections"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(true, false, true), status: false },
    MeshHealthCheck { plural: "meshhealthchecks", arg: "meshhealthcheck", list: "meshhealthchecks", short: "mhc",
        display: ("Mesh Health Check", "Mesh Health Checks"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(true, false, false), status: false },
    MeshHTTPRoute { plural: "meshhttproutes", arg: "meshhttproute", list: "meshhttproutes", short: "mhttpr",
        display: ("Mesh HTTP Route", "Mesh HTTP Routes"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(true, false, false), status: false },
    MeshLoadBalancingStrategy { plural: "meshloadbalancingstrategies", arg: "meshloadbalancingstrategy", list: "meshloadbalancingstrategies", short: "mlbs",
        display: ("Mesh Load Balancing Strategy", "Mesh Load Balancing Strategies"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(true, false, false), status: false },
    MeshMetric { plural: "meshmetrics", arg: "meshmetric", list: "meshmetrics", short: "mm",
        display: ("Mesh Metric", "Mesh Metrics"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(false, false, false), status: false },
    MeshPassthrough { plural: "meshpassthroughs", arg: "meshpassthrough", list: "meshpassthroughs", short: "mp",
        display: ("Mesh Passthrough", "Mesh Passthroughs"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(false, false, false), status: false },
    MeshProxyPatch { plural: "meshproxypatches", arg: "meshproxypatch", list: "meshproxypatches", short: "mpp",
        display: ("Mesh Proxy Patch", "Mesh Proxy Patches"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(false, false, false), status: false },
    MeshRateLimit { plural: "meshratelimits", arg: "meshratelimit", list: "meshratelimits", short: "mrl",
        display: ("Mesh Rate Limit", "Mesh Rate Limits"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(true, false, true), status: false },
    MeshRetry { plural: "meshretries", arg: "meshretry", list: "meshretries", short: "mr",
        display: ("Mesh Retry", "Mesh Retries"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(true, false, false), status: false },
    MeshTCPRoute { plural: "meshtcproutes", arg: "meshtcproute", list: "meshtcproutes", short: "mtcpr",
        display: ("Mesh TCP Route", "Mesh TCP Routes"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(true, false, false), status: false },
    MeshTimeout { plural: "meshtimeouts", arg: "meshtimeout", list: "meshtimeouts", short: "mt",
        display: ("Mesh Timeout", "Mesh Timeouts"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(true, false, true), status: false },
    MeshTLS { plural: "meshtlses", arg: "meshtls", list: "meshtlses", short: "mtls",
        display: ("Mesh TLS", "Mesh TLSes"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(false, false, true), status: false },
    MeshTrace { plural: "meshtraces", arg: "meshtrace", list: "meshtraces", short: "mtr",
        display: ("Mesh Trace", "Mesh Traces"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(false, false, false), status: false },
    MeshTrafficPermission { plural: "meshtrafficpermissions", arg: "meshtrafficpermission", list: "meshtrafficpermissions", short: "mtp",
        display: ("Mesh Traffic Permission", "Mesh Traffic Permissions"), scope: Mesh, kds: [GLOBAL_TO_ZONES, ZONE_TO_GLOBAL, SYNCED_ACROSS_ZONES],
        read_only: false, admin_only: false, layout: Nested, policy: policy(false, false, true), status: false },
}

impl ResourceKind {
    /// The `type` string in Kuma's JSON.
    pub fn name(self) -> &'static str {
        self.descriptor().name
    }

    pub fn plural(self) -> &'static str {
        self.descriptor().plural
    }

    pub fn scope(self) -> Scope {
        self.descriptor().scope
    }

    pub fn is_policy(self) -> bool {
        self.descriptor().policy.is_some()
    }

    /// Looks a kind up by its `type` string (`MeshTimeout`).
    pub fn from_name(name: &str) -> Option<ResourceKind> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// Looks a kind up by its REST path segment (`meshtimeouts`).
    pub fn from_plural(plural: &str) -> Option<ResourceKind> {
        Self::ALL.iter().copied().find(|k| k.plural() == plural)
    }

    /// Looks a kind up by any word kumactl accepts for it: singular, plural or
    /// short name (`meshtimeout`, `meshtimeouts`, `mt`), case-insensitively.
    pub fn from_kumactl_word(word: &str) -> Option<ResourceKind> {
        let w = word.to_ascii_lowercase();
        Self::ALL.iter().copied().find(|k| {
            let d = k.descriptor();
            (!d.kumactl_arg.is_empty() && (d.kumactl_arg == w || d.kumactl_list_arg == w))
                || (!d.short_name.is_empty() && d.short_name == w)
                || d.name.to_ascii_lowercase() == w
        })
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_plurals_and_short_names_are_unique() {
        let mut names = HashSet::new();
        let mut plurals = HashSet::new();
        let mut shorts = HashSet::new();
        for k in ResourceKind::ALL {
            let d = k.descriptor();
            assert_eq!(d.kind, *k);
            assert!(names.insert(d.name), "duplicate name {}", d.name);
            assert!(plurals.insert(d.plural), "duplicate plural {}", d.plural);
            if !d.short_name.is_empty() {
                assert!(
                    shorts.insert(d.short_name),
                    "duplicate short {}",
                    d.short_name
                );
            }
        }
        assert_eq!(ResourceKind::ALL.len(), 34);
    }

    #[test]
    fn lookups() {
        assert_eq!(
            ResourceKind::from_plural("meshtimeouts"),
            Some(ResourceKind::MeshTimeout)
        );
        assert_eq!(
            ResourceKind::from_name("MeshHTTPRoute"),
            Some(ResourceKind::MeshHTTPRoute)
        );
        assert_eq!(
            ResourceKind::from_kumactl_word("mt"),
            Some(ResourceKind::MeshTimeout)
        );
        assert_eq!(
            ResourceKind::from_kumactl_word("Dataplanes"),
            Some(ResourceKind::Dataplane)
        );
        assert_eq!(ResourceKind::from_plural("nope"), None);
        let policies = ResourceKind::ALL.iter().filter(|k| k.is_policy()).count();
        assert_eq!(policies, 16);
    }

    #[test]
    fn kds_flags() {
        let d = ResourceKind::MeshService.descriptor();
        assert!(d.kds.contains(KdsFlags::ZONE_TO_GLOBAL));
        assert!(!d.kds.contains(KdsFlags::GLOBAL_TO_ZONES));
    }
}
