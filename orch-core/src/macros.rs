//! Declarative macros that give every model type the same derives and serde shape.

/// Defines a Kubernetes-shaped struct: camelCase JSON/YAML field names, unknown fields refused,
/// absent fields defaulted, default-valued fields left out of the output, a bincode encoding
/// for storage, and (with the `arbitrary` feature) a proptest `Arbitrary` impl.
macro_rules! model {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize,
                 bincode::Encode, bincode::Decode)]
        #[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
        #[serde(rename_all = "camelCase", deny_unknown_fields, default)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(skip_serializing_if = "crate::macros::is_default")]
                #[cfg_attr(feature = "arbitrary", proptest(strategy = "crate::arbitrary::small()"))]
                pub $field: $ty,
            )*
        }

        #[cfg(feature = "arbitrary")]
        impl crate::arbitrary::Small for $name {
            fn small() -> proptest::strategy::BoxedStrategy<Self> {
                proptest::strategy::Strategy::boxed(proptest::arbitrary::any::<Self>())
            }
        }
    };
}

/// Defines an enum whose values are written as fixed strings (`Always`, `OnFailure`, ...).
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
                 serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
        #[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as written in manifests.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        #[cfg(feature = "arbitrary")]
        impl crate::arbitrary::Small for $name {
            fn small() -> proptest::strategy::BoxedStrategy<Self> {
                proptest::strategy::Strategy::boxed(proptest::arbitrary::any::<Self>())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Used by `skip_serializing_if`: a field equal to its default is left out of JSON and YAML.
pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
