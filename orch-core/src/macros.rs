//! Declarative macros that give every model type the same derives and serde shape.

/// Defines a Kubernetes-shaped struct: camelCase JSON/YAML field names, unknown fields refused,
/// absent fields defaulted, default-valued fields left out of the output, a bincode encoding
/// for storage, and (with the `arbitrary` feature) a proptest `Arbitrary` impl.
///
/// A field added to the model after the first storage format is marked `[since N]` (before
/// `pub`): bytes of a format before `N` (the decoder's [`crate::codec::Format`]) do not hold
/// it, and it decodes as its default; from `N` on it is read as any field. Fields are encoded
/// in declaration order, every one of them.
///
/// A list field that merges item by item in apply's three-way merge is marked
/// `[merge "key"]` (items matched by their field `key`, Kubernetes' `patchMergeKey`), a list
/// of strings merged as a set `[merge]`, a struct whose fields the manifest leaves out go when
/// it changes `[merge retain_keys]` (Kubernetes' `retainKeys`); see [`crate::schema`].
macro_rules! model {
    (@shape $ty:ty) => {
        <$ty as crate::schema::Schema>::shape()
    };
    (@shape $ty:ty, []) => {
        <$ty as crate::schema::Schema>::shape().with_strategy(crate::schema::ListStrategy::Set)
    };
    (@shape $ty:ty, [$key:literal]) => {
        <$ty as crate::schema::Schema>::shape().with_strategy(crate::schema::ListStrategy::Merge { key: $key })
    };
    (@shape $ty:ty, [retain_keys]) => {
        <$ty as crate::schema::Schema>::shape().with_retain_keys()
    };
    (@field $decoder:ident) => {
        bincode::Decode::decode($decoder)?
    };
    (@field $decoder:ident, $since:literal) => {{
        // A field of a format this build does not write yet would be written and never read.
        const _: () = assert!($since <= crate::codec::FORMAT_VERSION, "a `since` beyond this build's format");
        if $decoder.context().0 >= $since { bincode::Decode::decode($decoder)? } else { Default::default() }
    }};
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])* $([since $since:literal])? $([merge $($how:tt)*])?
                pub $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize,
                 bincode::Encode)]
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

        impl bincode::Decode<crate::codec::Format> for $name {
            #[allow(unused_variables)] // a struct without fields
            fn decode<D: bincode::de::Decoder<Context = crate::codec::Format>>(
                decoder: &mut D,
            ) -> Result<Self, bincode::error::DecodeError> {
                Ok(Self { $( $field: model!(@field decoder $(, $since)?), )* })
            }
        }
        bincode::impl_borrow_decode_with_context!($name, crate::codec::Format);

        impl crate::schema::Schema for $name {
            fn shape() -> crate::schema::Shape {
                crate::schema::Shape::Struct {
                    fields: || crate::schema::struct_fields::<$name>(vec![$( model!(@shape $ty $(, [$($how)*])?) ),*]),
                    retain_keys: false,
                }
            }
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

        impl crate::schema::Schema for $name {
            fn shape() -> crate::schema::Shape {
                crate::schema::Shape::Scalar
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
