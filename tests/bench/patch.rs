//! The cost of applying one watch event to a cached 2,000-item list (the
//! patcher streams the list; its working buffer is the memory).

use std::time::Instant;

use crate::load;
use crate::support;

/// Median time and peak buffer of patching one MODIFIED event into a
/// 2,000-item list (in memory source, discarded output: the patcher alone).
pub fn patch_cost(rounds: usize) -> (f64, f64) {
    use lite_apiserver::cache::patch::apply_events;
    use lite_apiserver::k8s::watch::{EventType, OwnedEvent};
    let pod = |i: usize, rv: usize| {
        serde_json::to_string(&support::world::pod(
            "edge",
            &format!("p{i:04}"),
            "edge-1",
            700,
        ))
        .unwrap()
        .replacen(
            "\"metadata\":{",
            &format!("\"metadata\":{{\"resourceVersion\":\"{rv}\","),
            1,
        )
    };
    let items: Vec<String> = (0..2000).map(|i| pod(i, i)).collect();
    let list = format!(
        r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"2000"}},"items":[{}]}}"#,
        items.join(",")
    );
    let mut times = Vec::new();
    let mut peak = 0usize;
    for r in 0..rounds {
        let target = (r * 7919) % 2000;
        let event = OwnedEvent {
            kind: EventType::Modified,
            namespace: Some("edge".into()),
            name: format!("p{target:04}"),
            resource_version: Some((3000 + r).to_string()),
            object: pod(target, 3000 + r).into_bytes(),
        };
        let t = Instant::now();
        let outcome = apply_events(
            &mut list.as_bytes(),
            &mut std::io::sink(),
            &[event],
            &mut |_, _| {},
        )
        .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
        peak = peak.max(outcome.peak_buffer);
    }
    (load::median(&mut times), peak as f64 / 1024.0)
}
