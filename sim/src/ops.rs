//! Datastore writes and workload plumbing standing in for `calicoctl` until the CLI drives the
//! world: what `calicoctl node`, `container add`, `profile add` and `profile set` write
//! (reference 2.1, 2.5, 2.7), written through any [`Store`] and [`WorkloadPlumbing`].

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};

use calico_backends::Store;
use calico_core::codec::{decode, encode, Value};
use calico_core::keys::{IpVersion, Key};
use calico_core::model::{
    AsNumber, EndpointId, EndpointState, IpPool, NodeMesh, Rules, WorkloadEndpoint, DEFAULT_AS,
    DEFAULT_POOL_V4, DEFAULT_POOL_V6, GLOBAL_CONFIG_DEFAULTS,
};
use calico_dataplane::{VethSpec, WorkloadPlumbing};
use ipnet::IpNet;

use crate::SimError;

/// The orchestrator id `calicoctl container add` writes.
pub const ORCHESTRATOR: &str = "docker";

/// The interface name inside the workload.
pub const WORKLOAD_IFACE: &str = "eth1";

async fn put(store: &dyn Store, key: &Key, value: &Value) -> Result<(), SimError> {
    store
        .put(&key.to_string(), encode(value))
        .await
        .map_err(SimError::store(format!("writing {key}")))?;
    Ok(())
}

async fn put_if_absent(store: &dyn Store, key: &Key, value: &Value) -> Result<(), SimError> {
    let path = key.to_string();
    match store.create(&path, encode(value)).await {
        Ok(_) | Err(calico_backends::StoreError::AlreadyExists { .. }) => Ok(()),
        Err(source) => Err(SimError::Store {
            action: format!("creating {path}"),
            source,
        }),
    }
}

async fn family_has_pool(store: &dyn Store, version: IpVersion) -> Result<bool, SimError> {
    let digit = if version == IpVersion::V4 { 4 } else { 6 };
    let prefix = format!("/calico/v1/ipam/v{digit}/pool/");
    let (pools, _) = store
        .list(&prefix)
        .await
        .map_err(SimError::store(format!("listing {prefix}")))?;
    Ok(!pools.is_empty())
}

/// What `calicoctl node --ip=<ip>` writes for `host`: default pools when a family has none,
/// the global defaults, `Ready`, the BGP defaults and the host registration (IPv4 only, no AS).
pub async fn node_start(store: &dyn Store, host: &str, ip: Ipv4Addr) -> Result<(), SimError> {
    for (version, cidr) in [
        (IpVersion::V4, DEFAULT_POOL_V4),
        (IpVersion::V6, DEFAULT_POOL_V6),
    ] {
        if !family_has_pool(store, version).await? {
            let cidr: IpNet = cidr.parse().map_err(|_| SimError::NoAddress {
                what: format!("default pool {cidr}"),
            })?;
            put(store, &Key::Pool { cidr }, &Value::Pool(IpPool::new(cidr))).await?;
        }
    }
    for (name, value) in GLOBAL_CONFIG_DEFAULTS {
        let key = Key::GlobalConfig {
            name: name.to_string(),
        };
        put_if_absent(store, &key, &Value::Config(value.to_string())).await?;
    }
    put(store, &Key::Ready, &Value::Ready(true)).await?;
    put_if_absent(
        store,
        &Key::GlobalAsNum,
        &Value::AsNum(AsNumber(DEFAULT_AS)),
    )
    .await?;
    put_if_absent(
        store,
        &Key::NodeMesh,
        &Value::NodeMesh(NodeMesh { enabled: true }),
    )
    .await?;
    let host_s = host.to_string();
    put(
        store,
        &Key::BirdIp {
            host: host_s.clone(),
        },
        &Value::BirdIp(ip),
    )
    .await?;
    let v4 = Key::HostIp {
        host: host_s.clone(),
        version: IpVersion::V4,
    };
    put(store, &v4, &Value::HostIp(Some(IpAddr::V4(ip)))).await?;
    let v6 = Key::HostIp {
        host: host_s.clone(),
        version: IpVersion::V6,
    };
    put(store, &v6, &Value::HostIp(None)).await?;
    let host_as = Key::HostAsNum {
        host: host_s.clone(),
    };
    match store.delete(&host_as.to_string(), None).await {
        Ok(_) | Err(calico_backends::StoreError::NotFound { .. }) => {}
        Err(source) => {
            return Err(SimError::Store {
                action: format!("deleting {host_as}"),
                source,
            })
        }
    }
    for (name, value) in [
        ("DefaultEndpointToHostAction", "RETURN"),
        ("marker", "created"),
    ] {
        let key = Key::HostConfig {
            host: host_s.clone(),
            name: name.to_string(),
        };
        put(store, &key, &Value::Config(value.to_string())).await?;
    }
    Ok(())
}

/// Writes `calicoctl bgp node-mesh on|off`.
pub async fn set_node_mesh(store: &dyn Store, enabled: bool) -> Result<(), SimError> {
    put(
        store,
        &Key::NodeMesh,
        &Value::NodeMesh(NodeMesh { enabled }),
    )
    .await
}

/// Writes a profile's tags and rules (`calicoctl profile add` writes `[name]` and
/// `Rules::default_for(name)`).
pub async fn write_profile(
    store: &dyn Store,
    name: &str,
    tags: &[String],
    rules: &Rules,
) -> Result<(), SimError> {
    let profile = name.to_string();
    put(
        store,
        &Key::ProfileTags {
            profile: profile.clone(),
        },
        &Value::Tags(tags.to_vec()),
    )
    .await?;
    put(
        store,
        &Key::ProfileRules { profile },
        &Value::Rules(rules.clone()),
    )
    .await
}

/// `calicoctl profile add <name>`: tags `[name]`, the default rules.
pub async fn profile_add(store: &dyn Store, name: &str) -> Result<(), SimError> {
    write_profile(store, name, &[name.to_string()], &Rules::default_for(name)).await
}

/// A deterministic 32-hex-digit endpoint id for a workload (the original used uuid1).
pub fn endpoint_id_for(host: &str, workload: &str) -> String {
    let half = |seed: u8| {
        let mut h = DefaultHasher::new();
        (seed, host, workload).hash(&mut h);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// `calicoctl container add <workload> <ip>` on `host`, whose BGP address is `host_ip`:
/// plumbs the veth into the workload's namespace (`plumbing`), then writes the endpoint with
/// no profiles. Returns the endpoint's id.
pub async fn container_add(
    store: &dyn Store,
    plumbing: &dyn WorkloadPlumbing,
    host: &str,
    host_ip: Ipv4Addr,
    workload: &str,
    ip: Ipv4Addr,
) -> Result<EndpointId, SimError> {
    let endpoint = endpoint_id_for(host, workload);
    let suffix = &endpoint[..11];
    let addr = IpNet::from(IpAddr::V4(ip));
    let spec = VethSpec {
        netns: workload.to_string(),
        host_iface: format!("cali{suffix}"),
        temp_iface: format!("tmp{suffix}"),
        workload_iface: WORKLOAD_IFACE.to_string(),
        addrs: vec![addr],
        gateway_v4: Some(host_ip),
        gateway_v6: None,
    };
    let mac = plumbing.add_veth(&spec).await.map_err(SimError::dataplane(
        host,
        format!("plumbing workload {workload}"),
    ))?;
    let id = EndpointId {
        host: host.to_string(),
        orchestrator: ORCHESTRATOR.to_string(),
        workload: workload.to_string(),
        endpoint,
    };
    let ep = WorkloadEndpoint {
        state: EndpointState::Active,
        name: spec.host_iface.clone(),
        mac,
        profile_ids: vec![],
        ipv4_nets: vec![ipnet::Ipv4Net::from(ip)],
        ipv6_nets: vec![],
        labels: Default::default(),
        ipv4_gateway: Some(host_ip),
        ipv6_gateway: None,
    };
    put(store, &Key::Endpoint(id.clone()), &Value::Endpoint(ep)).await?;
    Ok(id)
}

/// Finds the endpoint of `workload` on any host.
pub async fn find_endpoint(
    store: &dyn Store,
    workload: &str,
) -> Result<Option<EndpointId>, SimError> {
    let (kvs, _) = store
        .list("/calico/v1/host/")
        .await
        .map_err(SimError::store("listing endpoints"))?;
    Ok(kvs.into_iter().find_map(|kv| match Key::parse(&kv.key) {
        Ok(Key::Endpoint(id)) if id.workload == workload => Some(id),
        _ => None,
    }))
}

/// Reads, changes and compare-and-swaps an endpoint.
pub async fn update_endpoint(
    store: &dyn Store,
    id: &EndpointId,
    change: impl FnOnce(&mut WorkloadEndpoint),
) -> Result<(), SimError> {
    let key = Key::Endpoint(id.clone());
    let path = key.to_string();
    let kv = store
        .get(&path)
        .await
        .map_err(SimError::store(format!("reading {path}")))?
        .ok_or_else(|| SimError::NoEndpoint {
            workload: id.workload.clone(),
        })?;
    let mut ep = match decode(&key, &kv.value) {
        Ok(Value::Endpoint(ep)) => ep,
        Ok(_) => {
            return Err(SimError::NoEndpoint {
                workload: id.workload.clone(),
            })
        }
        Err(source) => return Err(SimError::Model { key: path, source }),
    };
    change(&mut ep);
    store
        .update(&path, encode(&Value::Endpoint(ep)), kv.mod_revision)
        .await
        .map_err(SimError::store(format!("updating {path}")))?;
    Ok(())
}

/// `calicoctl container <workload> profile set <profiles>`.
pub async fn set_profiles(
    store: &dyn Store,
    id: &EndpointId,
    profiles: &[String],
) -> Result<(), SimError> {
    update_endpoint(store, id, |ep| ep.profile_ids = profiles.to_vec()).await
}

/// Deletes an endpoint from the datastore (the workload's veth stays).
pub async fn remove_endpoint(store: &dyn Store, id: &EndpointId) -> Result<(), SimError> {
    let path = Key::Endpoint(id.clone()).to_string();
    store
        .delete(&path, None)
        .await
        .map_err(SimError::store(format!("deleting {path}")))?;
    Ok(())
}

/// Builds a generated cluster on an empty world: hosts registered (`calicoctl node`), agents
/// started, profiles written, workloads created, plumbed and given their endpoints and profile
/// lists. Returns the endpoint id of each workload, in spec order. Does not settle.
///
/// # Errors
/// Any datastore, plumbing or world error.
pub async fn build_cluster(
    world: &mut crate::World,
    spec: &crate::gen::ClusterSpec,
) -> Result<Vec<EndpointId>, SimError> {
    let store = world.store().clone();
    for i in 0..spec.hosts {
        let (name, ip) = (crate::gen::host_name(i), crate::gen::host_ip(i));
        world.add_host(&name, ip)?;
        node_start(store.as_ref(), &name, ip).await?;
        world.start_agent(&name)?;
    }
    for p in &spec.profiles {
        write_profile(store.as_ref(), &p.name, &p.tags, &p.rules).await?;
        if let Some(labels) = &p.labels {
            let key = Key::ProfileLabels {
                profile: p.name.clone(),
            };
            put(store.as_ref(), &key, &Value::Labels(labels.clone())).await?;
        }
    }
    for p in &spec.policies {
        let key = Key::Policy {
            name: p.name.clone(),
        };
        put(store.as_ref(), &key, &Value::Policy(p.policy.clone())).await?;
    }
    let mut ids = Vec::with_capacity(spec.workloads.len());
    for w in &spec.workloads {
        let host_name = crate::gen::host_name(w.host);
        world.add_workload(&host_name, &w.name)?;
        let host = world.host(&host_name)?;
        let id = container_add(
            store.as_ref(),
            host.plumbing(),
            &host_name,
            host.ip(),
            &w.name,
            w.addr,
        )
        .await?;
        if !w.profiles.is_empty() {
            set_profiles(store.as_ref(), &id, &w.profiles).await?;
        }
        if !w.labels.is_empty() {
            let labels = w.labels.clone();
            update_endpoint(store.as_ref(), &id, |ep| ep.labels = labels).await?;
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Applies one generated operation; removing an already removed endpoint is a no-op.
///
/// # Errors
/// Any datastore error.
pub async fn apply_op(
    store: &dyn Store,
    ids: &[EndpointId],
    op: &crate::gen::Op,
) -> Result<(), SimError> {
    use crate::gen::Op;
    let workload = match *op {
        Op::SetProfiles { workload, .. }
        | Op::RemoveEndpoint { workload }
        | Op::SetLabels { workload, .. } => workload,
        Op::DeletePolicy { policy } => {
            let key = Key::Policy {
                name: format!("pol-{policy}"),
            };
            return match store.delete(&key.to_string(), None).await {
                Ok(_) | Err(calico_backends::StoreError::NotFound { .. }) => Ok(()),
                Err(source) => Err(SimError::Store {
                    action: format!("deleting {key}"),
                    source,
                }),
            };
        }
    };
    let Some(id) = ids.get(workload) else {
        return Ok(());
    };
    let exists = store
        .get(&Key::Endpoint(id.clone()).to_string())
        .await
        .map_err(SimError::store(format!(
            "reading endpoint of {}",
            id.workload
        )))?
        .is_some();
    match op {
        _ if !exists => Ok(()),
        Op::SetProfiles { profiles, .. } => set_profiles(store, id, profiles).await,
        Op::RemoveEndpoint { .. } => remove_endpoint(store, id).await,
        Op::SetLabels { labels, .. } => {
            let labels = labels.clone();
            update_endpoint(store, id, |ep| ep.labels = labels).await
        }
        Op::DeletePolicy { .. } => Ok(()),
    }
}

/// The cluster state the datastore holds now (what every agent converges to).
///
/// # Errors
/// The store failing to list.
pub async fn cluster_state(
    store: &dyn Store,
) -> Result<calico_core::cluster::ClusterState, SimError> {
    let (kvs, _) = store
        .list(calico_core::keys::CALICO)
        .await
        .map_err(SimError::store("listing /calico/"))?;
    let mut state = calico_core::cluster::ClusterState::default();
    for kv in kvs {
        state.apply(&kv.key, Some(&kv.value));
    }
    Ok(state)
}
