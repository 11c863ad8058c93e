//! Recent predictions by text: streams repeat texts (shares, retweets, templates), and a text
//! seen a moment ago need not go through the encoder again. Bounded; the oldest entry goes
//! first. One cache per model version, so a promoted version starts empty.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// One text's prediction and embedding, as the classifier gave them.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Cached {
    pub label: String,
    pub confidence: f32,
    pub embedding: Option<Vec<f32>>,
}

/// At most `capacity` texts' predictions, first in first out.
#[derive(Debug)]
pub(super) struct TextCache {
    map: HashMap<Arc<str>, Cached>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl TextCache {
    pub fn new(capacity: usize) -> TextCache {
        TextCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub fn get(&self, text: &str) -> Option<&Cached> {
        self.map.get(text)
    }

    pub fn insert(&mut self, text: &str, cached: Cached) {
        if self.capacity == 0 || self.map.contains_key(text) {
            return;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
        let key: Arc<str> = Arc::from(text);
        self.order.push_back(key.clone());
        self.map.insert(key, cached);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(label: &str) -> Cached {
        Cached {
            label: label.into(),
            confidence: 0.5,
            embedding: None,
        }
    }

    #[test]
    fn it_keeps_the_newest_texts_up_to_its_capacity() {
        let mut cache = TextCache::new(2);
        cache.insert("a", entry("x"));
        cache.insert("b", entry("y"));
        cache.insert("a", entry("changed"));
        assert_eq!(cache.get("a").unwrap().label, "x");
        cache.insert("c", entry("z"));
        assert!(cache.get("a").is_none());
        assert_eq!(cache.len(), 2);
        let mut off = TextCache::new(0);
        off.insert("a", entry("x"));
        assert!(off.get("a").is_none());
    }
}
