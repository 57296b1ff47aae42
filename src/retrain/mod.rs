pub mod collect;
pub mod job;
pub mod verdict;
