//! The `[classify]` settings as validated by `config`: the profile and the
//! `[[classify.rules]]` entries. Defined here, beside the classifier that
//! compiles them, so `classify` depends on nothing above it.

use http::Method;

use super::Class;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    KeyProtect,
    HttpMethods,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::KeyProtect => "key-protect",
            Profile::HttpMethods => "http-methods",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyConfig {
    pub profile: Profile,
    pub rules: Vec<ClassifyRule>,
}

/// One `[[classify.rules]]` entry. `path` was checked: it starts with `/`,
/// has no empty segment, and `**` appears only as the last segment.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyRule {
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub path: String,
    pub action: Option<String>,
    pub class: Class,
}
