//! The double's objects: an etcd-like store with a global resourceVersion,
//! a bounded event history for watches, selectors, paging, Table rendering.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};

/// Events kept for watches that resume from a resourceVersion.
pub const HISTORY: usize = 20_000;

/// Where an object lives: (`/api/v1` or `/apis/G/V`, resource, namespace or "", name).
pub type ObjKey = (String, String, String, String);

/// A stored object and its serialized form.
#[derive(Clone)]
pub struct Obj {
    pub value: Arc<Value>,
    pub bytes: Arc<Vec<u8>>,
}

/// One change, as watches see it.
#[derive(Clone)]
pub struct Change {
    pub rv: u64,
    pub kind: &'static str,
    pub key: ObjKey,
    pub obj: Obj,
}

/// The world.
pub struct World {
    pub rv: u64,
    pub objects: BTreeMap<ObjKey, Obj>,
    pub history: VecDeque<Change>,
    /// Watches asking for an older resourceVersion get 410.
    pub oldest_rv: u64,
    uid: u64,
}

impl Default for World {
    fn default() -> Self {
        World {
            rv: 100,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            oldest_rv: 100,
            uid: 0,
        }
    }
}

/// `Pod` for `pods`, and so on.
pub fn kind_of(resource: &str) -> String {
    match resource {
        "pods" => "Pod".into(),
        "configmaps" => "ConfigMap".into(),
        "secrets" => "Secret".into(),
        "nodes" => "Node".into(),
        "leases" => "Lease".into(),
        "namespaces" => "Namespace".into(),
        "services" => "Service".into(),
        "endpoints" => "Endpoints".into(),
        "serviceaccounts" => "ServiceAccount".into(),
        "widgets" => "Widget".into(),
        "certificatesigningrequests" => "CertificateSigningRequest".into(),
        other => {
            let singular = other.strip_suffix('s').unwrap_or(other);
            let mut c = singular.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
    }
}

/// `v1` for `/api/v1`, `G/V` for `/apis/G/V`.
pub fn api_version_of(prefix: &str) -> String {
    prefix
        .trim_start_matches("/api/")
        .trim_start_matches("/apis/")
        .to_owned()
}

impl World {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, kind: &'static str, key: ObjKey, obj: Obj) {
        let rv = self.rv;
        self.history.push_back(Change { rv, kind, key, obj });
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.oldest_rv = old.rv;
            }
        }
    }

    fn finish(value: Value) -> Obj {
        let bytes = Arc::new(serde_json::to_vec(&value).unwrap());
        Obj {
            value: Arc::new(value),
            bytes,
        }
    }

    /// Creates or replaces an object (bumps the rv, records the event).
    pub fn put(&mut self, key: ObjKey, mut value: Value) -> Obj {
        let rv = self.next_rv();
        let existing = self.objects.get(&key).map(|o| o.value.clone());
        let meta = value
            .as_object_mut()
            .unwrap()
            .entry("metadata")
            .or_insert_with(|| json!({}));
        let meta = meta.as_object_mut().unwrap();
        meta.insert("name".into(), json!(key.3));
        if !key.2.is_empty() {
            meta.insert("namespace".into(), json!(key.2));
        }
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        match &existing {
            Some(old) => {
                for field in ["uid", "creationTimestamp"] {
                    if let Some(v) = old["metadata"].get(field) {
                        meta.insert(field.into(), v.clone());
                    }
                }
            }
            None => {
                self.uid += 1;
                meta.insert(
                    "uid".into(),
                    json!(format!("00000000-0000-4000-8000-{:012x}", self.uid)),
                );
                meta.insert("creationTimestamp".into(), json!("2026-11-23T07:50:37Z"));
            }
        }
        let obj = value.as_object_mut().unwrap();
        obj.insert("kind".into(), json!(kind_of(&key.1)));
        obj.insert("apiVersion".into(), json!(api_version_of(&key.0)));
        let obj = Self::finish(value);
        self.objects.insert(key.clone(), obj.clone());
        self.record(
            if existing.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            },
            key,
            obj.clone(),
        );
        obj
    }

    /// Deletes an object; returns it.
    pub fn delete(&mut self, key: &ObjKey) -> Option<Obj> {
        let old = self.objects.remove(key)?;
        let rv = self.next_rv();
        let mut value = (*old.value).clone();
        value["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = Self::finish(value);
        self.record("DELETED", key.clone(), obj.clone());
        Some(obj)
    }

    /// Objects of a collection (namespace "" = all namespaces) matching
    /// the selectors.
    pub fn list(&self, prefix: &str, resource: &str, ns: &str, selectors: &Selectors) -> Vec<Obj> {
        self.objects
            .iter()
            .filter(|(k, o)| {
                k.0 == prefix
                    && k.1 == resource
                    && (ns.is_empty() || k.2 == ns)
                    && selectors.matches(&o.value)
            })
            .map(|(_, o)| o.clone())
            .collect()
    }
}

/// Label and field selectors (equality forms).
#[derive(Default, Clone, Debug)]
pub struct Selectors {
    labels: Vec<(String, bool, String)>,
    fields: Vec<(String, bool, String)>,
}

fn parse_terms(text: &str) -> Vec<(String, bool, String)> {
    text.split(',')
        .filter(|t| !t.is_empty())
        .filter_map(|t| {
            if let Some((k, v)) = t.split_once("!=") {
                Some((k.to_owned(), false, v.to_owned()))
            } else {
                let (k, v) = t.split_once("==").or_else(|| t.split_once('='))?;
                Some((k.to_owned(), true, v.to_owned()))
            }
        })
        .collect()
}

impl Selectors {
    pub fn parse(label: Option<&str>, field: Option<&str>) -> Selectors {
        Selectors {
            labels: label.map(parse_terms).unwrap_or_default(),
            fields: field.map(parse_terms).unwrap_or_default(),
        }
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels_ok = self.labels.iter().all(|(k, eq, v)| {
            let actual = obj["metadata"]["labels"].get(k).and_then(Value::as_str);
            (actual == Some(v.as_str())) == *eq
        });
        let fields_ok = self.fields.iter().all(|(k, eq, v)| {
            let mut cur = obj;
            for part in k.split('.') {
                cur = &cur[part];
            }
            let actual = cur.as_str().unwrap_or("");
            (actual == v) == *eq
        });
        labels_ok && fields_ok
    }
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// Table columns for a resource.
pub fn columns(resource: &str) -> Value {
    let col = |name: &str, format: &str, description: &str| json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0});
    let mut cols = vec![col("Name", "name", NAME_DESCRIPTION)];
    if resource == "pods" {
        cols.push(col(
            "Ready",
            "",
            "The aggregate readiness state of this pod for accepting traffic.",
        ));
        cols.push(col(
            "Status",
            "",
            "The aggregate status of the containers in this pod.",
        ));
        cols.push(col(
            "Restarts",
            "",
            "The number of times the containers in this pod have been restarted.",
        ));
    }
    cols.push(col("Age", "", "CreationTimestamp is a timestamp representing the server time when this object was created."));
    Value::Array(cols)
}

/// One Table row for an object (object as PartialObjectMetadata).
pub fn row(resource: &str, obj: &Value) -> Value {
    let name = obj["metadata"]["name"].clone();
    let mut cells = vec![name];
    if resource == "pods" {
        let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
        cells.push(json!(format!("0/{total}")));
        cells.push(
            obj["status"]["phase"]
                .as_str()
                .map_or(json!("Pending"), |p| json!(p)),
        );
        cells.push(json!("0"));
    }
    cells.push(json!("1d"));
    json!({"cells": cells, "object": partial(obj)})
}

/// PartialObjectMetadata of an object.
pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"].clone()})
}

/// A one-row Table (what a Table watch event carries).
pub fn table_of(resource: &str, objs: &[&Value], rv: u64) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns(resource),
        "rows": objs.iter().map(|o| row(resource, o)).collect::<Vec<_>>(),
    })
}

/// JSON merge patch (RFC 7386).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A pod object bound to `node`, padded to about `pad` bytes.
pub fn pod(ns: &str, name: &str, node: &str, pad: usize) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"},
                     "annotations": {"pad": "x".repeat(pad)}},
        "spec": {"nodeName": node, "containers": [{"name": "echo", "image": "superedge/echoserver:2.2", "ports": [{"containerPort": 8080}]}]},
        "status": {"phase": "Pending", "qosClass": "BestEffort"}
    })
}
