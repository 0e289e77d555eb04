//! Profiles (`/calico/v1/policy/profile/<name>/{tags,rules}`, reference 1.4).

use std::collections::BTreeMap;

use calico_core::codec::Value;
use calico_core::keys::{Key, V1};
use calico_core::model::Rules;
use calico_core::names::validate_name;

use super::{
    retry_on_conflict, unexpected, Datastore, DatastoreError, EndpointFilter, Listing, TxnPlan,
};

/// A profile's tags and rules; either may be missing in a damaged datastore.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    pub tags: Option<Vec<String>>,
    pub rules: Option<Rules>,
}

impl Datastore {
    /// Creates a profile with tags `[name]` and the default rules in one transaction.
    ///
    /// # Errors
    /// `ProfileExists` when either key exists; `Model` for an invalid name.
    pub async fn create_profile(&self, name: &str) -> Result<(), DatastoreError> {
        validate_name("profile", name)?;
        let tags = Key::ProfileTags {
            profile: name.to_string(),
        };
        let rules = Key::ProfileRules {
            profile: name.to_string(),
        };
        let mut plan = TxnPlan::default();
        plan.require_absent(&tags);
        plan.require_absent(&rules);
        plan.put(&tags, &Value::Tags(vec![name.to_string()]));
        plan.put(&rules, &Value::Rules(Rules::default_for(name)));
        match self.commit(plan).await {
            Err(e) if e.is_conflict() => Err(DatastoreError::ProfileExists {
                name: name.to_string(),
            }),
            other => other.map(|_| ()),
        }
    }

    /// Whether the profile exists (has tags or rules).
    pub async fn profile_exists(&self, name: &str) -> Result<bool, DatastoreError> {
        validate_name("profile", name)?;
        Ok(!self.list_keys(&Key::profile_dir(name)).await?.is_empty())
    }

    /// Every profile, by name.
    pub async fn list_profiles(&self) -> Result<BTreeMap<String, Profile>, DatastoreError> {
        self.list_profiles_lenient().await?.strict()
    }

    /// As [`list_profiles`](Self::list_profiles), with the undecodable tags and rules records
    /// beside them (a profile whose only record is broken is not among the items).
    pub async fn list_profiles_lenient(
        &self,
    ) -> Result<Listing<BTreeMap<String, Profile>>, DatastoreError> {
        let mut out: BTreeMap<String, Profile> = BTreeMap::new();
        let listing = self.list_lenient(&format!("{V1}policy/profile/")).await?;
        for (key, item) in listing.items {
            match (&key, item.value) {
                (Key::ProfileTags { profile }, Value::Tags(t)) => {
                    out.entry(profile.clone()).or_default().tags = Some(t);
                }
                (Key::ProfileRules { profile }, Value::Rules(r)) => {
                    out.entry(profile.clone()).or_default().rules = Some(r);
                }
                _ => return Err(unexpected(&key)),
            }
        }
        Ok(Listing {
            items: out,
            broken: listing.broken,
        })
    }

    /// Ids (as `host/orchestrator/workload/endpoint`) of every endpoint using `name`.
    pub async fn profile_users(&self, name: &str) -> Result<Vec<String>, DatastoreError> {
        Ok(self
            .list_endpoints(&EndpointFilter::default())
            .await?
            .into_iter()
            .filter(|(_, ep)| ep.value.profile_ids.iter().any(|p| p == name))
            .map(|(id, _)| id.to_string())
            .collect())
    }

    /// Deletes the whole profile directory in one transaction. With `check`, refuses while any
    /// endpoint references it.
    ///
    /// # Errors
    /// `ProfileNotFound`, `ProfileInUse { endpoints }`.
    pub async fn remove_profile(&self, name: &str, check: bool) -> Result<(), DatastoreError> {
        validate_name("profile", name)?;
        if check {
            let users = self.profile_users(name).await?;
            if !users.is_empty() {
                return Err(DatastoreError::ProfileInUse {
                    name: name.to_string(),
                    endpoints: users,
                });
            }
        }
        let keys = self.list_keys(&Key::profile_dir(name)).await?;
        if keys.is_empty() {
            return Err(DatastoreError::ProfileNotFound {
                name: name.to_string(),
            });
        }
        let mut plan = TxnPlan::default();
        for k in keys {
            plan.delete(k);
        }
        self.commit(plan).await?;
        Ok(())
    }

    /// The profile's tags.
    ///
    /// # Errors
    /// `ProfileNotFound` when it has none stored.
    pub async fn profile_tags(&self, name: &str) -> Result<Vec<String>, DatastoreError> {
        self.profile_part::<Tags>(name).await.map(|t| t.0)
    }

    /// Read-modify-writes the profile's tags with compare-and-swap; the result is validated.
    pub async fn update_profile_tags<F>(
        &self,
        name: &str,
        change: F,
    ) -> Result<Vec<String>, DatastoreError>
    where
        F: Fn(&mut Vec<String>) -> Result<(), DatastoreError>,
    {
        let tags = self
            .update_profile_part(name, |t: &mut Tags| change(&mut t.0))
            .await?;
        Ok(tags.0)
    }

    /// The profile's rules.
    ///
    /// # Errors
    /// `ProfileNotFound` when it has none stored.
    pub async fn profile_rules(&self, name: &str) -> Result<Rules, DatastoreError> {
        self.profile_part::<Rules>(name).await
    }

    /// Read-modify-writes the profile's rules with compare-and-swap; the result is validated.
    pub async fn update_profile_rules<F>(
        &self,
        name: &str,
        change: F,
    ) -> Result<Rules, DatastoreError>
    where
        F: Fn(&mut Rules) -> Result<(), DatastoreError>,
    {
        self.update_profile_part(name, change).await
    }

    async fn profile_part<P: ProfilePart>(&self, name: &str) -> Result<P, DatastoreError> {
        let key = P::key(name)?;
        match self.get(&key).await?.map(|v| v.value) {
            Some(value) => P::from_value(value).ok_or_else(|| unexpected(&key)),
            None => Err(DatastoreError::ProfileNotFound {
                name: name.to_string(),
            }),
        }
    }

    async fn update_profile_part<P, F>(&self, name: &str, change: F) -> Result<P, DatastoreError>
    where
        P: ProfilePart,
        F: Fn(&mut P) -> Result<(), DatastoreError>,
    {
        let key = P::key(name)?;
        let action = format!("updating {} of profile {name}", P::WHAT);
        retry_on_conflict(&action, || {
            let key = key.clone();
            let change = &change;
            async move {
                let current =
                    self.get(&key)
                        .await?
                        .ok_or_else(|| DatastoreError::ProfileNotFound {
                            name: name.to_string(),
                        })?;
                let mut part = P::from_value(current.value).ok_or_else(|| unexpected(&key))?;
                change(&mut part)?;
                part.validate()?;
                let mut plan = TxnPlan::default();
                plan.require_revision(&key, current.revision);
                plan.put(&key, &part.clone().into_value());
                self.commit(plan).await?;
                Ok(part)
            }
        })
        .await
    }
}

/// One half of a profile (its tags or its rules): its key, its value and its validation.
trait ProfilePart: Clone + Sized {
    const WHAT: &'static str;
    fn key(profile: &str) -> Result<Key, DatastoreError>;
    fn from_value(value: Value) -> Option<Self>;
    fn into_value(self) -> Value;
    fn validate(&mut self) -> Result<(), DatastoreError>;
}

/// A profile's tag list.
#[derive(Clone)]
struct Tags(Vec<String>);

impl ProfilePart for Tags {
    const WHAT: &'static str = "tags";

    fn key(profile: &str) -> Result<Key, DatastoreError> {
        validate_name("profile", profile)?;
        Ok(Key::ProfileTags {
            profile: profile.to_string(),
        })
    }

    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Tags(tags) => Some(Tags(tags)),
            _ => None,
        }
    }

    fn into_value(self) -> Value {
        Value::Tags(self.0)
    }

    fn validate(&mut self) -> Result<(), DatastoreError> {
        for tag in &self.0 {
            validate_name("tag", tag)?;
        }
        Ok(())
    }
}

impl ProfilePart for Rules {
    const WHAT: &'static str = "rules";

    fn key(profile: &str) -> Result<Key, DatastoreError> {
        validate_name("profile", profile)?;
        Ok(Key::ProfileRules {
            profile: profile.to_string(),
        })
    }

    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Rules(rules) => Some(rules),
            _ => None,
        }
    }

    fn into_value(self) -> Value {
        Value::Rules(self)
    }

    fn validate(&mut self) -> Result<(), DatastoreError> {
        Ok(Rules::validate(self)?)
    }
}
