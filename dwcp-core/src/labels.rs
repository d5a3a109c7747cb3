//! Metric label values the library cannot know by itself: the names an
//! application gives its traffic classes.
//!
//! The library labels per-class metrics (`dwcp_compression_*_bytes_total`)
//! with `class`. By default that is the class id ("0", "1"...); an
//! application that names its classes (the daemon does, from its
//! configuration) registers the names once with [`set_class_names`] so every
//! metric uses the same class names.

use std::sync::RwLock;

static CLASS_NAMES: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Sets the names of class ids `0..names.len()` for metric labels
/// (process-wide; the last call wins).
pub fn set_class_names<S: AsRef<str>>(names: &[S]) {
    let names = names.iter().map(|n| n.as_ref().to_string()).collect();
    *CLASS_NAMES.write().unwrap_or_else(|p| p.into_inner()) = names;
}

/// The label of class `id`: its registered name, else its number.
pub fn class_label(id: u8) -> String {
    CLASS_NAMES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(usize::from(id))
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_replace_ids() {
        assert_eq!(class_label(200), "200");
        set_class_names(&["interactive", "bulk"]);
        assert_eq!(class_label(1), "bulk");
        assert_eq!(class_label(2), "2");
    }
}
