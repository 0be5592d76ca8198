//! Rust code generated from the Leadflow v1 contracts in `proto/`.
//!
//! Each service's package is a module here (`leadflow_proto::ingestion::v1`, …) holding its
//! messages, its tonic client and its tonic server. [`FILE_DESCRIPTOR_SET`] feeds server
//! reflection.

#![allow(missing_docs, unreachable_pub, clippy::large_enum_variant)]

/// The encoded `FileDescriptorSet` of every Leadflow contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/leadflow_descriptor.bin"));

/// Messages shared by all services (`leadflow.common.v1`).
pub mod common {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/leadflow.common.v1.rs"));
    }
}

/// The ingestion service's contract (`leadflow.ingestion.v1`).
pub mod ingestion {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/leadflow.ingestion.v1.rs"));
    }
}

/// The scoring service's contract (`leadflow.scoring.v1`).
pub mod scoring {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/leadflow.scoring.v1.rs"));
    }
}

/// The qualification service's contract (`leadflow.qualification.v1`).
pub mod qualification {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/leadflow.qualification.v1.rs"));
    }
}

/// The handoff service's contract (`leadflow.handoff.v1`), and the events it publishes back
/// upstream (`leadflow.handoff.events.v1`, a package of its own to avoid an import cycle).
pub mod handoff {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/leadflow.handoff.v1.rs"));
    }

    /// The decision and outcome events handoff publishes to qualification and scoring.
    pub mod events {
        /// Version 1.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/leadflow.handoff.events.v1.rs"));
        }
    }
}
