//! Real KVM backend (see issue: real backend). Placeholder crate root.
