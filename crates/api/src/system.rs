//! Domain types of `orchestrator.v1.SystemService` and their conversions.

use std::path::PathBuf;
use std::time::Duration;

use drover_store::Revision;

use crate::ProtocolError;
use crate::pb::orchestrator::v1 as pb;

/// What a running orchestrator is and what it runs on (`GetInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The server's version, e.g. `0.1.0`.
    pub version: String,
    pub store: StoreInfo,
    /// Time since the server started serving.
    pub uptime: Duration,
    /// The subject of the caller's verified client certificate, as the
    /// server saw it; `None` for an anonymous caller.
    pub caller: Option<String>,
}

/// The store behind an orchestrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// `Store::backend_name()`: "embedded" or "etcd".
    pub backend: String,
    /// The store's current revision; at least 1 (the empty store).
    pub revision: Revision,
    pub location: StoreLocation,
}

/// Where a store keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded backend without persistence.
    InMemory,
    /// The embedded backend, durable in this directory.
    DataDir(PathBuf),
    /// An etcd cluster reached through these client endpoints.
    Etcd { endpoints: Vec<String> },
}

impl From<SystemInfo> for pb::GetInfoResponse {
    fn from(info: SystemInfo) -> Self {
        pb::GetInfoResponse {
            version: info.version,
            store: Some(info.store.into()),
            uptime: Some(duration_to_pb(info.uptime)),
            caller: info.caller.unwrap_or_default(),
        }
    }
}

/// Saturates instead of failing: an uptime beyond `i64::MAX` seconds cannot
/// happen, and sending must not fail.
fn duration_to_pb(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 999_999_999,
    })
}

impl TryFrom<pb::GetInfoResponse> for SystemInfo {
    type Error = ProtocolError;

    fn try_from(msg: pb::GetInfoResponse) -> Result<Self, ProtocolError> {
        if msg.version.is_empty() {
            return Err(ProtocolError::missing("version"));
        }
        let store = msg.store.ok_or_else(|| ProtocolError::missing("store"))?;
        let uptime = msg.uptime.ok_or_else(|| ProtocolError::missing("uptime"))?;
        let uptime = Duration::try_from(uptime)
            .map_err(|e| ProtocolError::invalid("uptime", e.to_string()))?;
        Ok(SystemInfo {
            version: msg.version,
            store: StoreInfo::try_from(store)?,
            uptime,
            caller: Some(msg.caller).filter(|caller| !caller.is_empty()),
        })
    }
}

impl From<StoreInfo> for pb::StoreInfo {
    fn from(info: StoreInfo) -> Self {
        use pb::store_info::Location;
        let location = match info.location {
            StoreLocation::InMemory => Location::InMemory(pb::InMemoryLocation {}),
            StoreLocation::DataDir(path) => Location::DataDir(pb::DataDirLocation {
                path: path.to_string_lossy().into_owned(),
            }),
            StoreLocation::Etcd { endpoints } => Location::Etcd(pb::EtcdLocation { endpoints }),
        };
        pb::StoreInfo {
            backend: info.backend,
            revision: info.revision,
            location: Some(location),
        }
    }
}

impl TryFrom<pb::StoreInfo> for StoreInfo {
    type Error = ProtocolError;

    fn try_from(msg: pb::StoreInfo) -> Result<Self, ProtocolError> {
        use pb::store_info::Location;
        if msg.backend.is_empty() {
            return Err(ProtocolError::missing("store.backend"));
        }
        if msg.revision < 1 {
            return Err(ProtocolError::invalid(
                "store.revision",
                format!("must be at least 1, got {}", msg.revision),
            ));
        }
        let location = match msg.location {
            None => return Err(ProtocolError::missing("store.location")),
            Some(Location::InMemory(pb::InMemoryLocation {})) => StoreLocation::InMemory,
            Some(Location::DataDir(dir)) => {
                if dir.path.is_empty() {
                    return Err(ProtocolError::missing("store.data_dir.path"));
                }
                StoreLocation::DataDir(PathBuf::from(dir.path))
            }
            Some(Location::Etcd(etcd)) => {
                if etcd.endpoints.is_empty() {
                    return Err(ProtocolError::missing("store.etcd.endpoints"));
                }
                if let Some(i) = etcd.endpoints.iter().position(|e| e.trim().is_empty()) {
                    return Err(ProtocolError::invalid(
                        format!("store.etcd.endpoints[{i}]"),
                        "endpoint is empty",
                    ));
                }
                StoreLocation::Etcd {
                    endpoints: etcd.endpoints,
                }
            }
        };
        Ok(StoreInfo {
            backend: msg.backend,
            revision: msg.revision,
            location,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn valid_response() -> pb::GetInfoResponse {
        pb::GetInfoResponse::from(SystemInfo {
            version: "0.1.0".into(),
            store: StoreInfo {
                backend: "etcd".into(),
                revision: 42,
                location: StoreLocation::Etcd {
                    endpoints: vec!["http://127.0.0.1:2379".into()],
                },
            },
            uptime: Duration::from_millis(1500),
            caller: Some("CN=agent-7,O=nodes".into()),
        })
    }

    #[test]
    fn each_missing_or_invalid_field_is_named() {
        type Breakage = fn(&mut pb::GetInfoResponse);
        let cases: Vec<(Breakage, ProtocolError)> = vec![
            (|m| m.version.clear(), ProtocolError::missing("version")),
            (|m| m.store = None, ProtocolError::missing("store")),
            (|m| m.uptime = None, ProtocolError::missing("uptime")),
            (
                |m| m.store.as_mut().unwrap().backend.clear(),
                ProtocolError::missing("store.backend"),
            ),
            (
                |m| m.store.as_mut().unwrap().revision = 0,
                ProtocolError::invalid("store.revision", "must be at least 1, got 0"),
            ),
            (
                |m| m.store.as_mut().unwrap().location = None,
                ProtocolError::missing("store.location"),
            ),
            (
                |m| {
                    m.store.as_mut().unwrap().location =
                        Some(pb::store_info::Location::DataDir(pb::DataDirLocation {
                            path: String::new(),
                        }))
                },
                ProtocolError::missing("store.data_dir.path"),
            ),
            (
                |m| {
                    m.store.as_mut().unwrap().location =
                        Some(pb::store_info::Location::Etcd(pb::EtcdLocation {
                            endpoints: vec![],
                        }))
                },
                ProtocolError::missing("store.etcd.endpoints"),
            ),
            (
                |m| {
                    m.store.as_mut().unwrap().location =
                        Some(pb::store_info::Location::Etcd(pb::EtcdLocation {
                            endpoints: vec!["http://a:1".into(), " ".into()],
                        }))
                },
                ProtocolError::invalid("store.etcd.endpoints[1]", "endpoint is empty"),
            ),
        ];
        assert!(SystemInfo::try_from(valid_response()).is_ok());
        for (break_it, expected) in cases {
            let mut msg = valid_response();
            break_it(&mut msg);
            assert_eq!(SystemInfo::try_from(msg), Err(expected));
        }
    }

    #[test]
    fn negative_uptime_is_invalid() {
        let mut msg = valid_response();
        msg.uptime = Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        });
        match SystemInfo::try_from(msg) {
            Err(ProtocolError::Invalid { field, .. }) => assert_eq!(field, "uptime"),
            other => panic!("expected an invalid uptime, got {other:?}"),
        }
    }

    fn location() -> impl Strategy<Value = StoreLocation> {
        prop_oneof![
            Just(StoreLocation::InMemory),
            "[a-zA-Z0-9/._-]{1,40}".prop_map(|p| StoreLocation::DataDir(PathBuf::from(p))),
            prop::collection::vec("http://[a-z0-9.]{1,20}:[0-9]{1,5}", 1..4)
                .prop_map(|endpoints| StoreLocation::Etcd { endpoints }),
        ]
    }

    fn system_info() -> impl Strategy<Value = SystemInfo> {
        (
            "[0-9a-z.+-]{1,20}",
            "[a-z]{1,10}",
            1..i64::MAX,
            location(),
            any::<u32>(),
            0..1_000_000_000u32,
            proptest::option::of("[A-Za-z0-9=, ]{1,30}"),
        )
            .prop_map(
                |(version, backend, revision, location, secs, nanos, caller)| SystemInfo {
                    version,
                    store: StoreInfo {
                        backend,
                        revision,
                        location,
                    },
                    uptime: Duration::new(u64::from(secs), nanos),
                    caller,
                },
            )
    }

    proptest! {
        /// Whatever a server sends survives encoding and validation unchanged.
        #[test]
        fn valid_info_round_trips_through_the_wire(info in system_info()) {
            let bytes = pb::GetInfoResponse::from(info.clone()).encode_to_vec();
            let decoded = pb::GetInfoResponse::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(SystemInfo::try_from(decoded), Ok(info));
        }

        /// Arbitrary bytes never panic the decoder or the validation: they are
        /// either a decode error, a typed protocol error, or a valid value.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(msg) = pb::GetInfoResponse::decode(bytes.as_slice())
                && let Ok(info) = SystemInfo::try_from(msg)
            {
                prop_assert!(!info.version.is_empty());
                prop_assert!(info.store.revision >= 1);
            }
        }
    }
}
