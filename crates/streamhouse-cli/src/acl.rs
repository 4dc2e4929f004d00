//! `streamhouse acl`: ACLs in the metadata store, in Kafka's model. Agents
//! read them within about a second of a change.

use streamhouse_metadata::{
    AclBinding, AclFilter, AclOperation, AclPermission, PatternFilter, PatternType, ResourceType,
};

use crate::users::Store;
use crate::{BoxError, Output};

/// The resource an ACL is about: exactly one of these.
#[derive(clap::Args)]
#[group(required = false, multiple = false)]
pub struct Resource {
    /// A topic name (or prefix, with --prefixed; `*` for every topic).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group id (or prefix).
    #[arg(long)]
    group: Option<String>,
    /// A transactional id (or prefix).
    #[arg(long)]
    transactional_id: Option<String>,
    /// The cluster (creating topics, idempotent producers, ACLs and users).
    #[arg(long)]
    cluster: bool,
}

impl Resource {
    fn get(&self) -> Option<(ResourceType, String)> {
        match (
            &self.topic,
            &self.group,
            &self.transactional_id,
            self.cluster,
        ) {
            (Some(t), _, _, _) => Some((ResourceType::Topic, t.clone())),
            (_, Some(g), _, _) => Some((ResourceType::Group, g.clone())),
            (_, _, Some(t), _) => Some((ResourceType::TransactionalId, t.clone())),
            (_, _, _, true) => Some((ResourceType::Cluster, "kafka-cluster".into())),
            _ => None,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum AclCommand {
    /// Allow (or with --deny, deny) operations on a resource to a principal.
    Add {
        /// Principal: User:NAME, or User:* for everyone.
        #[arg(long)]
        principal: String,
        #[command(flatten)]
        resource: Resource,
        /// The name is a prefix: the ACL covers every name starting with it.
        #[arg(long)]
        prefixed: bool,
        /// Operations (repeat or comma-separate): all, read, write, create,
        /// delete, alter, describe, describe-configs, alter-configs,
        /// idempotent-write.
        #[arg(long, required = true, value_delimiter = ',')]
        operation: Vec<AclOperation>,
        /// Deny instead of allow (a deny wins over any allow).
        #[arg(long)]
        deny: bool,
        /// Client address the ACL applies to.
        #[arg(long, default_value = "*")]
        host: String,
    },
    /// Remove the ACLs that match: everything given must match; what is not
    /// given matches anything.
    Remove {
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        resource: Resource,
        /// Match only prefixed ACLs (without it: only literal ones, when a
        /// resource is given).
        #[arg(long)]
        prefixed: bool,
        #[arg(long, value_delimiter = ',')]
        operation: Vec<AclOperation>,
        /// Only deny ACLs (default: allow and deny).
        #[arg(long)]
        deny: bool,
        #[arg(long)]
        host: Option<String>,
    },
    /// List ACLs, optionally those of one principal.
    List {
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

pub async fn acl(store: &Store, command: AclCommand) -> Result<(), BoxError> {
    let metadata = store.open().await?;
    match command {
        AclCommand::Add {
            principal,
            resource,
            prefixed,
            operation,
            deny,
            host,
        } => {
            let (resource_type, resource_name) = resource
                .get()
                .ok_or("name a resource: --topic, --group, --transactional-id or --cluster")?;
            let acls: Vec<AclBinding> = operation
                .into_iter()
                .map(|operation| AclBinding {
                    principal: principal.clone(),
                    host: host.clone(),
                    resource_type,
                    resource_name: resource_name.clone(),
                    pattern_type: if prefixed {
                        PatternType::Prefixed
                    } else {
                        PatternType::Literal
                    },
                    operation,
                    permission: if deny {
                        AclPermission::Deny
                    } else {
                        AclPermission::Allow
                    },
                })
                .collect();
            metadata.create_acls(&acls).await?;
            for a in &acls {
                println!("added: {}", line(a));
            }
        }
        AclCommand::Remove {
            principal,
            resource,
            prefixed,
            operation,
            deny,
            host,
        } => {
            let named = resource.get();
            let operations: Vec<Option<AclOperation>> = if operation.is_empty() {
                vec![None]
            } else {
                operation.into_iter().map(Some).collect()
            };
            let mut removed = 0;
            for operation in operations {
                let filter = AclFilter {
                    principal: principal.clone(),
                    host: host.clone(),
                    resource_type: named.as_ref().map(|(t, _)| *t),
                    resource_name: named.as_ref().map(|(_, n)| n.clone()),
                    pattern: match (named.is_some(), prefixed) {
                        (_, true) => PatternFilter::Prefixed,
                        (true, false) => PatternFilter::Literal,
                        (false, false) => PatternFilter::Any,
                    },
                    operation,
                    permission: deny.then_some(AclPermission::Deny),
                };
                for a in metadata.delete_acls(&filter).await? {
                    println!("removed: {}", line(&a));
                    removed += 1;
                }
            }
            if removed == 0 {
                return Err("no ACL matched".into());
            }
        }
        AclCommand::List { principal, output } => {
            let acls: Vec<AclBinding> = metadata
                .acls()
                .await?
                .into_iter()
                .filter(|a| principal.as_ref().is_none_or(|p| *p == a.principal))
                .collect();
            match output {
                Output::Json => {
                    let list: Vec<_> = acls
                        .iter()
                        .map(|a| {
                            serde_json::json!({
                                "principal": a.principal,
                                "host": a.host,
                                "resource_type": a.resource_type.name(),
                                "resource_name": a.resource_name,
                                "pattern_type": pattern(a.pattern_type),
                                "operation": a.operation.name(),
                                "permission": a.permission.name(),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                }
                Output::Table => {
                    for a in &acls {
                        println!("{}", line(a));
                    }
                }
            }
        }
    }
    Ok(())
}

fn pattern(p: PatternType) -> &'static str {
    match p {
        PatternType::Literal => "literal",
        PatternType::Prefixed => "prefixed",
    }
}

fn line(a: &AclBinding) -> String {
    format!(
        "{} {} {} on {} {:?} ({}) from host {}",
        a.principal,
        a.permission.name(),
        a.operation.name(),
        a.resource_type.name(),
        a.resource_name,
        pattern(a.pattern_type),
        a.host
    )
}
