//! Workload endpoints (`/calico/v1/host/<h>/workload/<o>/<w>/endpoint/<id>`, reference 1.3).

use calico_core::codec::Value;
use calico_core::keys::{Key, V1};
use calico_core::model::{EndpointId, WorkloadEndpoint};

use super::{
    retry_on_conflict, unexpected, Datastore, DatastoreError, Listing, TxnPlan, Versioned,
};

/// Narrows an endpoint search; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointFilter {
    pub host: Option<String>,
    pub orchestrator: Option<String>,
    pub workload: Option<String>,
    pub endpoint: Option<String>,
}

impl EndpointFilter {
    fn matches(&self, id: &EndpointId) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        ok(&self.host, &id.host)
            && ok(&self.orchestrator, &id.orchestrator)
            && ok(&self.workload, &id.workload)
            && ok(&self.endpoint, &id.endpoint)
    }
}

/// A change to an endpoint's ordered profile list (reference 2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileEdit {
    /// Replace the whole list (empty clears it).
    Set(Vec<String>),
    /// Add at the end; a profile already present is an error and nothing changes.
    Append(Vec<String>),
    /// Remove the named profiles; one not present is an error and nothing changes.
    Remove(Vec<String>),
}

impl ProfileEdit {
    fn names(&self) -> &[String] {
        match self {
            ProfileEdit::Set(n) | ProfileEdit::Append(n) | ProfileEdit::Remove(n) => n,
        }
    }

    fn apply(&self, endpoint: &str, list: &mut Vec<String>) -> Result<(), DatastoreError> {
        match self {
            ProfileEdit::Set(names) => *list = names.clone(),
            ProfileEdit::Append(names) => {
                for n in names {
                    if list.contains(n) {
                        return Err(DatastoreError::ProfileAlreadyInEndpoint {
                            profile: n.clone(),
                            endpoint: endpoint.to_string(),
                        });
                    }
                    list.push(n.clone());
                }
            }
            ProfileEdit::Remove(names) => {
                for n in names {
                    let Some(pos) = list.iter().position(|p| p == n) else {
                        return Err(DatastoreError::ProfileNotInEndpoint {
                            profile: n.clone(),
                            endpoint: endpoint.to_string(),
                        });
                    };
                    list.remove(pos);
                }
            }
        }
        Ok(())
    }
}

impl Datastore {
    /// Every endpoint matching `filter`, sorted by id.
    pub async fn list_endpoints(
        &self,
        filter: &EndpointFilter,
    ) -> Result<Vec<(EndpointId, Versioned<WorkloadEndpoint>)>, DatastoreError> {
        self.list_endpoints_lenient(filter).await?.strict()
    }

    /// As [`list_endpoints`](Self::list_endpoints), with the undecodable endpoint records
    /// matching `filter` beside them.
    pub async fn list_endpoints_lenient(
        &self,
        filter: &EndpointFilter,
    ) -> Result<Listing<Vec<(EndpointId, Versioned<WorkloadEndpoint>)>>, DatastoreError> {
        let prefix = match (&filter.host, &filter.orchestrator, &filter.workload) {
            (Some(h), Some(o), Some(w)) => Key::workload_dir(h, o, w),
            (Some(h), _, _) => Key::host_dir(h),
            _ => format!("{V1}host/"),
        };
        let listing = self.list_lenient(&prefix).await?;
        let broken = listing
            .broken
            .into_iter()
            .filter(|b| match Key::parse(&b.key) {
                Ok(Key::Endpoint(id)) => filter.matches(&id),
                _ => false,
            })
            .collect();
        let mut out = Vec::new();
        for (key, item) in listing.items {
            let Key::Endpoint(id) = &key else { continue };
            if !filter.matches(id) {
                continue;
            }
            match item.value {
                Value::Endpoint(ep) => out.push((
                    id.clone(),
                    Versioned {
                        value: ep,
                        revision: item.revision,
                    },
                )),
                _ => return Err(unexpected(&key)),
            }
        }
        Ok(Listing { items: out, broken })
    }

    /// One endpoint by its full id.
    pub async fn get_endpoint(
        &self,
        id: &EndpointId,
    ) -> Result<Option<Versioned<WorkloadEndpoint>>, DatastoreError> {
        let key = Key::Endpoint(id.clone());
        match self.get(&key).await? {
            None => Ok(None),
            Some(Versioned {
                value: Value::Endpoint(ep),
                revision,
            }) => Ok(Some(Versioned {
                value: ep,
                revision,
            })),
            Some(_) => Err(unexpected(&key)),
        }
    }

    /// A plan creating the endpoint (fails at commit if it already exists).
    pub fn plan_create_endpoint(
        &self,
        id: &EndpointId,
        endpoint: &WorkloadEndpoint,
    ) -> Result<TxnPlan, DatastoreError> {
        id.validate()?;
        endpoint.validate()?;
        let key = Key::Endpoint(id.clone());
        let mut plan = TxnPlan::default();
        plan.require_absent(&key);
        plan.put(&key, &Value::Endpoint(endpoint.clone()));
        Ok(plan)
    }

    /// Read-modify-writes one endpoint with compare-and-swap, retrying on conflict. `change`
    /// may run several times; it sees the latest stored endpoint each time.
    pub async fn update_endpoint<F>(
        &self,
        id: &EndpointId,
        change: F,
    ) -> Result<WorkloadEndpoint, DatastoreError>
    where
        F: Fn(&mut WorkloadEndpoint) -> Result<(), DatastoreError>,
    {
        let key = Key::Endpoint(id.clone());
        retry_on_conflict(&format!("updating endpoint {id}"), || {
            let key = key.clone();
            let change = &change;
            async move {
                let current = self.get_endpoint(id).await?.ok_or_else(|| {
                    DatastoreError::EndpointNotFound {
                        endpoint: id.to_string(),
                    }
                })?;
                let mut ep = current.value;
                change(&mut ep)?;
                ep.validate()?;
                let mut plan = TxnPlan::default();
                plan.require_revision(&key, current.revision);
                plan.put(&key, &Value::Endpoint(ep.clone()));
                self.commit(plan).await?;
                Ok(ep)
            }
        })
        .await
    }

    /// Edits an endpoint's profile list. Every named profile must exist (checked in the same
    /// transaction, so a concurrently removed profile fails the write) and none may repeat.
    pub async fn edit_endpoint_profiles(
        &self,
        id: &EndpointId,
        edit: &ProfileEdit,
    ) -> Result<WorkloadEndpoint, DatastoreError> {
        let names = edit.names();
        for (i, n) in names.iter().enumerate() {
            calico_core::names::validate_name("profile", n)?;
            if names[..i].contains(n) {
                return Err(DatastoreError::ProfileRepeated { profile: n.clone() });
            }
        }
        let key = Key::Endpoint(id.clone());
        retry_on_conflict(&format!("updating endpoint {id}"), || async {
            let mut plan = TxnPlan::default();
            if !matches!(edit, ProfileEdit::Remove(_)) {
                for n in names {
                    let tags = Key::ProfileTags { profile: n.clone() };
                    let Some(kv) = self.store().get(&tags.to_string()).await? else {
                        return Err(DatastoreError::ProfileNotFound { name: n.clone() });
                    };
                    plan.require_revision(&tags, kv.mod_revision);
                }
            }
            let current =
                self.get_endpoint(id)
                    .await?
                    .ok_or_else(|| DatastoreError::EndpointNotFound {
                        endpoint: id.to_string(),
                    })?;
            let mut ep = current.value;
            edit.apply(&id.endpoint, &mut ep.profile_ids)?;
            plan.require_revision(&key, current.revision);
            plan.put(&key, &Value::Endpoint(ep.clone()));
            self.commit(plan).await?;
            Ok(ep)
        })
        .await
    }
}
