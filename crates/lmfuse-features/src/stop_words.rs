//! Stop lists: words dropped from word n-grams before they are formed. There is no English
//! list on purpose: scikit-learn's holds negations ("not", "no"), which carry sentiment, and
//! sublinear-tf word n-grams need none.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::OnceLock;

/// Which words the word analyzer drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopWords {
    /// None (scikit-learn's default).
    #[default]
    None,
    /// Chinese function words ([`CHINESE`]): structural and modal particles, pronouns,
    /// demonstratives, prepositions and linking conjunctions. Negations (不, 没, 没有, 无, 别,
    /// 未), degree adverbs (很, 太, 最, 非常) and contrast (但, 但是, 却, 不过) are kept, since
    /// they carry sentiment and intent.
    Chinese,
}

/// The Chinese stop list (jieba's segmentation of each entry is the entry itself).
pub const CHINESE: &[&str] = &[
    // structural, aspect and modal particles
    "的",
    "地",
    "得",
    "之",
    "了",
    "着",
    "过",
    "吗",
    "呢",
    "吧",
    "啊",
    "呀",
    "哦",
    "嘛",
    "啦",
    "哈",
    "么",
    "哇",
    "嗯",
    "呗",
    "罢了",
    "而已",
    "似的",
    "等",
    "等等",
    // pronouns and demonstratives
    "我",
    "你",
    "您",
    "他",
    "她",
    "它",
    "我们",
    "你们",
    "他们",
    "她们",
    "它们",
    "咱们",
    "大家",
    "自己",
    "人家",
    "这",
    "那",
    "这个",
    "那个",
    "这些",
    "那些",
    "这里",
    "那里",
    "这儿",
    "那儿",
    "这样",
    "那样",
    "这么",
    "那么",
    "此",
    "其",
    "该",
    "本",
    "某",
    "各",
    "每",
    // prepositions and linking conjunctions
    "在",
    "于",
    "以",
    "从",
    "自",
    "向",
    "往",
    "对",
    "对于",
    "关于",
    "把",
    "被",
    "给",
    "让",
    "跟",
    "和",
    "与",
    "及",
    "以及",
    "同",
    "并",
    "并且",
    "而且",
    "或",
    "或者",
    "还是",
    "而",
    "则",
    "因为",
    "所以",
    "因此",
    "由于",
    "如果",
    "假如",
    "即使",
    "虽然",
    "然后",
    "接着",
    "为",
    "为了",
    "按照",
    "根据",
    "通过",
    "除了",
    // measure words and fillers
    "个",
    "们",
    "一个",
    "一些",
    "一下",
    "一种",
    "一样",
    "之类",
    "什么样",
    // copula and light verbs
    "是",
    "就是",
    "即",
    "乃",
];

impl StopWords {
    /// Whether `word` (lower-cased) is dropped.
    pub fn contains(self, word: &str) -> bool {
        match self {
            StopWords::None => false,
            StopWords::Chinese => chinese().contains(word),
        }
    }

    /// The name on the command line: `none`, `zh`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopWords::None => "none",
            StopWords::Chinese => "zh",
        }
    }

    /// Whether it is the default, none (left out of serialised settings).
    pub fn is_none(&self) -> bool {
        *self == StopWords::None
    }
}

fn chinese() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| CHINESE.iter().copied().collect())
}

/// A stop-list name that is neither `none` nor `zh`.
#[derive(Debug, thiserror::Error)]
#[error("unknown stop list {0:?}: expected none or zh")]
pub struct UnknownStopWords(pub String);

impl FromStr for StopWords {
    type Err = UnknownStopWords;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(StopWords::None),
            "zh" | "chinese" => Ok(StopWords::Chinese),
            other => Err(UnknownStopWords(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chinese_list_keeps_negations_degree_and_contrast() {
        for kept in [
            "不", "没", "没有", "无", "别", "未", "很", "太", "最", "非常", "但", "但是", "却",
            "不过",
        ] {
            assert!(!StopWords::Chinese.contains(kept), "{kept}");
        }
        for dropped in ["的", "了", "我们", "这个", "在", "和"] {
            assert!(StopWords::Chinese.contains(dropped), "{dropped}");
        }
        assert!(!StopWords::None.contains("的"));
        let unique: HashSet<_> = CHINESE.iter().collect();
        assert_eq!(unique.len(), CHINESE.len(), "no entry twice");
    }

    #[test]
    fn every_entry_is_one_jieba_word() {
        let jieba = jieba_rs::Jieba::new();
        for w in CHINESE {
            let cut: Vec<&str> = jieba.cut(w, false).into_iter().map(|t| t.word).collect();
            assert_eq!(
                cut,
                [*w],
                "jieba cuts {w:?} as {cut:?}, so it would never be dropped"
            );
        }
    }
}
