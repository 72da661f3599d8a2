//! Which configured plugin instance applies to a request: Kong's precedence
//! (plugins_iterator `lookup_cfg`), most specific first:
//! route+service+consumer > route+consumer > service+consumer > route+service > consumer >
//! route > service > global.

use std::collections::BTreeMap;

use sluice_model::Plugin;
use uuid::Uuid;

/// Rank of a plugin's scope; higher wins. `None` when the plugin does not apply.
pub fn rank(
    plugin: &Plugin,
    route: Option<Uuid>,
    service: Option<Uuid>,
    consumer: Option<Uuid>,
) -> Option<u8> {
    let matches = |scope: Option<Uuid>, actual: Option<Uuid>| match scope {
        None => Some(false),
        Some(id) if Some(id) == actual => Some(true),
        Some(_) => None,
    };
    let on_route = matches(plugin.route.map(|k| k.id), route)?;
    let on_service = matches(plugin.service.map(|k| k.id), service)?;
    let on_consumer = matches(plugin.consumer.map(|k| k.id), consumer)?;
    Some(match (on_route, on_service, on_consumer) {
        (true, true, true) => 7,
        (true, false, true) => 6,
        (false, true, true) => 5,
        (true, true, false) => 4,
        (false, false, true) => 3,
        (true, false, false) => 2,
        (false, true, false) => 1,
        (false, false, false) => 0,
    })
}

/// The enabled instance of each plugin name that applies to (route, service, consumer),
/// picked by Kong's precedence, with the [`rank`] it won at. Sorted by name for determinism.
pub fn select<'p>(
    candidates: impl IntoIterator<Item = &'p Plugin>,
    route: Option<Uuid>,
    service: Option<Uuid>,
    consumer: Option<Uuid>,
) -> Vec<(u8, &'p Plugin)> {
    let mut best: BTreeMap<&str, (u8, &Plugin)> = BTreeMap::new();
    for plugin in candidates {
        if !plugin.enabled {
            continue;
        }
        let Some(rank) = rank(plugin, route, service, consumer) else {
            continue;
        };
        match best.get(plugin.name.as_str()) {
            Some((current, _)) if *current >= rank => {}
            _ => {
                best.insert(plugin.name.as_str(), (rank, plugin));
            }
        }
    }
    best.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::ForeignKey;

    fn plugin(
        name: &str,
        route: Option<u128>,
        service: Option<u128>,
        consumer: Option<u128>,
    ) -> Plugin {
        let fk = |id: Option<u128>| {
            id.map(|id| ForeignKey {
                id: Uuid::from_u128(id),
            })
        };
        Plugin {
            id: Uuid::new_v4(),
            created_at: 0,
            updated_at: 0,
            name: name.to_owned(),
            instance_name: Some(format!("{name}-{route:?}-{service:?}-{consumer:?}")),
            route: fk(route),
            service: fk(service),
            consumer: fk(consumer),
            config: serde_json::json!({}),
            protocols: vec![sluice_model::Protocol::Http],
            enabled: true,
            tags: None,
        }
    }

    /// Every precedence level against every less specific one: the more specific wins.
    #[test]
    fn kong_precedence() {
        let (r, s, c) = (Some(1), Some(2), Some(3));
        // Most specific first, as in Kong's lookup_cfg.
        let levels = [
            plugin("p", r, s, c),
            plugin("p", r, None, c),
            plugin("p", None, s, c),
            plugin("p", r, s, None),
            plugin("p", None, None, c),
            plugin("p", r, None, None),
            plugin("p", None, s, None),
            plugin("p", None, None, None),
        ];
        let ids = (
            Some(Uuid::from_u128(1)),
            Some(Uuid::from_u128(2)),
            Some(Uuid::from_u128(3)),
        );
        for winner in 0..levels.len() {
            let chosen = select(&levels[winner..], ids.0, ids.1, ids.2);
            assert_eq!(chosen.len(), 1);
            assert_eq!(
                chosen[0].1.id, levels[winner].id,
                "level {winner} should win"
            );
            assert_eq!(chosen[0].0 as usize, levels.len() - 1 - winner, "its rank");
        }
    }

    #[test]
    fn other_scopes_and_disabled_do_not_apply() {
        let other_route = plugin("p", Some(9), None, None);
        let mut disabled = plugin("q", None, None, None);
        disabled.enabled = false;
        let global = plugin("r", None, None, None);
        let chosen = select(
            [&other_route, &disabled, &global],
            Some(Uuid::from_u128(1)),
            None,
            None,
        );
        let names: Vec<&str> = chosen.iter().map(|(_, p)| p.name.as_str()).collect();
        assert_eq!(names, ["r"]);
        // Without an identified consumer, consumer-scoped plugins never apply.
        let consumer_only = plugin("p", None, None, Some(3));
        assert!(select([&consumer_only], None, None, None).is_empty());
    }
}
