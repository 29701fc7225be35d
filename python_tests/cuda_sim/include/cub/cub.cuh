// Host stand-in for the parts of CUB the kernels use, found before the real
// <cub/cub.cuh> on the harness's include path. Results are those CUB
// documents: stable radix sorts in CUB's key order, the two-phase
// temp-storage protocol, BlockReduce defined in thread 0 only.
//
//  * BlockReduce synchronises once inside (like CUB's warp-reductions
//    algorithm: inputs published, barrier, thread 0 combines), so a kernel
//    that reuses TempStorage without its own __syncthreads races. The order in
//    which thread 0 combines is selectable (sim::reduce_order()): CUB's
//    (shuffle tree inside warps of 32, then the warp totals left to right), a
//    left fold, or a random tree with random operand order, which exposes
//    reduction operators whose result depends on the order (tie-breaks).
//    Threads other than 0 get a poisoned value, as CUB leaves theirs undefined.
//  * Radix sorts order keys by CUB's twiddled bit patterns: floats by sign and
//    magnitude with -0.0 and +0.0 equal (CUB >= 2 maps -0.0 to +0.0), NaNs by
//    their bits (positive NaNs after +inf, negative ones before -inf), signed
//    integers by value; only bits [begin_bit, end_bit) count; equal keys keep
//    their input order in both directions.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#ifndef CUB_NAMESPACE_BEGIN
#define CUB_NAMESPACE_BEGIN namespace cub {
#define CUB_NAMESPACE_END }
#endif

namespace cub {

struct Sum {
  template <typename T>
  T operator()(const T& a, const T& b) const {
    return a + b;
  }
};
struct Max {
  template <typename T>
  T operator()(const T& a, const T& b) const {
    return a < b ? b : a;
  }
};
struct Min {
  template <typename T>
  T operator()(const T& a, const T& b) const {
    return b < a ? b : a;
  }
};

enum BlockReduceAlgorithm {
  BLOCK_REDUCE_RAKING_COMMUTATIVE_ONLY,
  BLOCK_REDUCE_RAKING,
  BLOCK_REDUCE_WARP_REDUCTIONS,
};

namespace sim_detail {

// Bytes of a value that no thread but 0 may rely on.
template <typename T>
T poisoned(const T& fallback) {
  if constexpr (std::is_trivially_copyable_v<T>) {
    T out;
    ::sim::fill_poison(&out, sizeof(T));
    return out;
  } else {
    return fallback;
  }
}

template <typename T, typename Op>
T combine_cub(std::vector<T>& v, Op op) {
  // Inside each warp: shuffle-down tree (offsets 1, 2, 4, 8, 16), lane 0 holds
  // op(op(v0, v1), op(v2, v3)) ...; then thread 0 folds the warp totals.
  const size_t n = v.size();
  std::vector<T> warp_totals;
  for (size_t w0 = 0; w0 < n; w0 += 32) {
    const size_t lanes = std::min<size_t>(32, n - w0);
    for (size_t offset = 1; offset < lanes; offset *= 2) {
      for (size_t lane = 0; lane + offset < lanes; lane += 2 * offset) {
        v[w0 + lane] = op(v[w0 + lane], v[w0 + lane + offset]);
      }
    }
    warp_totals.push_back(v[w0]);
  }
  T acc = warp_totals[0];
  for (size_t w = 1; w < warp_totals.size(); ++w) acc = op(acc, warp_totals[w]);
  return acc;
}

template <typename T, typename Op>
T combine_sequential(std::vector<T>& v, Op op) {
  T acc = v[0];
  for (size_t i = 1; i < v.size(); ++i) acc = op(acc, v[i]);
  return acc;
}

// The items in a random order, combined pairwise (a balanced tree over the
// shuffled items), each node with a random operand order: op(a, b) or op(b, a).
template <typename T, typename Op>
T combine_random(std::vector<T>& v, Op op) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(::sim::random_u64() % i)]);
  for (size_t width = v.size(); width > 1; width = (width + 1) / 2) {
    for (size_t k = 0; 2 * k + 1 < width; ++k) {
      v[k] = (::sim::random_u64() & 1) ? op(v[2 * k], v[2 * k + 1]) : op(v[2 * k + 1], v[2 * k]);
    }
    if (width % 2) v[width / 2] = v[width - 1];
  }
  return v[0];
}

}  // namespace sim_detail

template <typename T, int BLOCK_DIM_X, BlockReduceAlgorithm ALGORITHM = BLOCK_REDUCE_WARP_REDUCTIONS,
          int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockReduce {
  static constexpr int kThreads = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;

 public:
  // Raw bytes: trivially constructible, so a __shared__ (static) instance needs
  // no guard and is poisoned like any other shared memory.
  struct TempStorage {
    alignas(T) unsigned char bytes[sizeof(T) * kThreads];
  };

  explicit BlockReduce(TempStorage& storage) : storage_(storage) {}

  template <typename Op>
  T Reduce(T input, Op op, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return ReduceImpl(input, op, kThreads, file, line);
  }
  template <typename Op>
  T Reduce(T input, Op op, int num_valid, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return ReduceImpl(input, op, num_valid, file, line);
  }
  T Sum(T input, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return ReduceImpl(input, cub::Sum(), kThreads, file, line);
  }
  T Sum(T input, int num_valid, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return ReduceImpl(input, cub::Sum(), num_valid, file, line);
  }

 private:
  template <typename Op>
  T ReduceImpl(const T& input, Op op, int num_valid, const char* file, int line) {
    if (int(::sim::block_threads()) != kThreads) {
      ::sim::fail("cub::BlockReduce<_, %d> used in a block of %u threads (%s:%d)", kThreads, ::sim::block_threads(),
                  file, line);
    }
    const unsigned me = ::sim::linear_tid();
    T* items = reinterpret_cast<T*>(storage_.bytes);
    if (int(me) < num_valid) std::memcpy(static_cast<void*>(&items[me]), &input, sizeof(T));
    ::sim::syncthreads(file, line);
    if (me != 0) return sim_detail::poisoned(input);
    const int count = std::max(1, std::min(num_valid, kThreads));
    std::vector<T> v(items, items + count);
    switch (::sim::reduce_order()) {
      case ::sim::ReduceOrder::kSequential:
        return sim_detail::combine_sequential(v, op);
      case ::sim::ReduceOrder::kRandom:
        return sim_detail::combine_random(v, op);
      default:
        return sim_detail::combine_cub(v, op);
    }
  }

  TempStorage& storage_;
};

namespace sim_detail {

template <typename K>
struct RadixTraits;
template <typename U>
struct UnsignedRadix {
  using Bits = U;
  static Bits twiddle(U v) { return v; }
};
template <typename S, typename U>
struct SignedRadix {
  using Bits = U;
  static Bits twiddle(S v) { return U(v) ^ (U(1) << (8 * sizeof(U) - 1)); }
};
template <typename F, typename U>
struct FloatRadix {
  using Bits = U;
  static Bits twiddle(F v) {
    U u;
    std::memcpy(&u, &v, sizeof(U));
    const U high = U(1) << (8 * sizeof(U) - 1);
    if (u == high) u = 0;  // -0.0 sorts as +0.0
    return (u & high) ? U(~u) : U(u ^ high);
  }
};
template <>
struct RadixTraits<unsigned char> : UnsignedRadix<unsigned char> {};
template <>
struct RadixTraits<unsigned short> : UnsignedRadix<unsigned short> {};
template <>
struct RadixTraits<unsigned int> : UnsignedRadix<unsigned int> {};
template <>
struct RadixTraits<unsigned long> : UnsignedRadix<unsigned long> {};
template <>
struct RadixTraits<unsigned long long> : UnsignedRadix<unsigned long long> {};
template <>
struct RadixTraits<bool> : UnsignedRadix<unsigned char> {};
template <>
struct RadixTraits<signed char> : SignedRadix<signed char, unsigned char> {};
template <>
struct RadixTraits<char> : SignedRadix<char, unsigned char> {};
template <>
struct RadixTraits<short> : SignedRadix<short, unsigned short> {};
template <>
struct RadixTraits<int> : SignedRadix<int, unsigned int> {};
template <>
struct RadixTraits<long> : SignedRadix<long, unsigned long> {};
template <>
struct RadixTraits<long long> : SignedRadix<long long, unsigned long long> {};
template <>
struct RadixTraits<float> : FloatRadix<float, uint32_t> {};
template <>
struct RadixTraits<double> : FloatRadix<double, uint64_t> {};

constexpr size_t kTempBytes = 256;  // what the first (size query) call asks for

// The two-phase protocol: a null pointer asks for the size; otherwise the
// buffer must be at least that large (it is poisoned, standing in for CUB's use).
inline bool size_query(void* d_temp_storage, size_t& temp_storage_bytes, cudaError_t* err) {
  if (d_temp_storage == nullptr) {
    temp_storage_bytes = kTempBytes;
    *err = cudaSuccess;
    return true;
  }
  if (temp_storage_bytes < kTempBytes) {
    ::sim::fail("cub: temp_storage_bytes (%zu) is smaller than the size query returned (%zu)", temp_storage_bytes,
                kTempBytes);
  }
  ::sim::fill_poison(d_temp_storage, temp_storage_bytes);
  return false;
}

template <typename K, typename V, typename N>
cudaError_t sort_pairs(void* d_temp_storage, size_t& temp_storage_bytes, const K* keys_in, K* keys_out,
                       const V* values_in, V* values_out, N num_items, int begin_bit, int end_bit, bool descending) {
  cudaError_t err;
  if (size_query(d_temp_storage, temp_storage_bytes, &err)) return err;
  if (keys_in == keys_out || values_in == values_out) {
    ::sim::fail("cub::DeviceRadixSort::SortPairs: input and output must not alias");
  }
  using Traits = RadixTraits<std::remove_cv_t<K>>;
  using Bits = typename Traits::Bits;
  constexpr int kBits = int(8 * sizeof(Bits));
  if (begin_bit < 0 || end_bit > kBits || begin_bit > end_bit) {
    ::sim::fail("cub::DeviceRadixSort: bad bit range [%d, %d)", begin_bit, end_bit);
  }
  const int64_t n = int64_t(num_items);
  if (n <= 0) return cudaSuccess;
  const Bits mask = end_bit - begin_bit >= kBits ? Bits(~Bits(0)) : Bits((Bits(1) << (end_bit - begin_bit)) - 1);
  std::vector<Bits> digits(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    digits[size_t(i)] = Bits(Bits(Traits::twiddle(keys_in[i]) >> begin_bit) & mask);
  }
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t(0));
  if (descending) {
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return digits[a] > digits[b]; });
  } else {
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return digits[a] < digits[b]; });
  }
  std::vector<K> k(static_cast<size_t>(n));
  std::vector<V> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    k[size_t(i)] = keys_in[idx[size_t(i)]];
    v[size_t(i)] = values_in[idx[size_t(i)]];
  }
  std::copy(k.begin(), k.end(), keys_out);
  std::copy(v.begin(), v.end(), values_out);
  return cudaSuccess;
}

}  // namespace sim_detail

struct DeviceRadixSort {
  template <typename K, typename V, typename N>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const K* d_keys_in, K* d_keys_out,
                               const V* d_values_in, V* d_values_out, N num_items, int begin_bit = 0,
                               int end_bit = int(sizeof(K) * 8), cudaStream_t stream = nullptr) {
    (void)stream;
    return sim_detail::sort_pairs(d_temp_storage, temp_storage_bytes, d_keys_in, d_keys_out, d_values_in, d_values_out,
                                  num_items, begin_bit, end_bit, false);
  }
  template <typename K, typename V, typename N>
  static cudaError_t SortPairsDescending(void* d_temp_storage, size_t& temp_storage_bytes, const K* d_keys_in,
                                         K* d_keys_out, const V* d_values_in, V* d_values_out, N num_items,
                                         int begin_bit = 0, int end_bit = int(sizeof(K) * 8),
                                         cudaStream_t stream = nullptr) {
    (void)stream;
    return sim_detail::sort_pairs(d_temp_storage, temp_storage_bytes, d_keys_in, d_keys_out, d_values_in, d_values_out,
                                  num_items, begin_bit, end_bit, true);
  }
};

struct DeviceSelect {
  template <typename InIt, typename FlagIt, typename OutIt, typename CountIt, typename N>
  static cudaError_t Flagged(void* d_temp_storage, size_t& temp_storage_bytes, InIt d_in, FlagIt d_flags, OutIt d_out,
                             CountIt d_num_selected_out, N num_items, cudaStream_t stream = nullptr) {
    (void)stream;
    cudaError_t err;
    if (sim_detail::size_query(d_temp_storage, temp_storage_bytes, &err)) return err;
    using Out = std::remove_reference_t<decltype(*d_out)>;
    std::vector<Out> picked;
    for (int64_t i = 0; i < int64_t(num_items); ++i) {
      if (d_flags[i]) picked.push_back(d_in[i]);
    }
    for (size_t i = 0; i < picked.size(); ++i) d_out[i] = picked[i];
    *d_num_selected_out = static_cast<std::remove_reference_t<decltype(*d_num_selected_out)>>(picked.size());
    return cudaSuccess;
  }
};

struct DeviceScan {
  template <typename InIt, typename OutIt, typename N>
  static cudaError_t ExclusiveSum(void* d_temp_storage, size_t& temp_storage_bytes, InIt d_in, OutIt d_out, N num_items,
                                  cudaStream_t stream = nullptr) {
    (void)stream;
    cudaError_t err;
    if (sim_detail::size_query(d_temp_storage, temp_storage_bytes, &err)) return err;
    using Acc = std::remove_cv_t<std::remove_reference_t<decltype(*d_in)>>;
    Acc acc{};
    for (int64_t i = 0; i < int64_t(num_items); ++i) {
      const Acc v = d_in[i];  // read before the write: in-place scans are allowed
      d_out[i] = acc;
      acc = acc + v;
    }
    return cudaSuccess;
  }
  template <typename InIt, typename OutIt, typename N>
  static cudaError_t InclusiveSum(void* d_temp_storage, size_t& temp_storage_bytes, InIt d_in, OutIt d_out, N num_items,
                                  cudaStream_t stream = nullptr) {
    (void)stream;
    cudaError_t err;
    if (sim_detail::size_query(d_temp_storage, temp_storage_bytes, &err)) return err;
    using Acc = std::remove_cv_t<std::remove_reference_t<decltype(*d_in)>>;
    Acc acc{};
    for (int64_t i = 0; i < int64_t(num_items); ++i) {
      acc = acc + d_in[i];
      d_out[i] = acc;
    }
    return cudaSuccess;
  }
};

struct DeviceReduce {
  template <typename InIt, typename OutIt, typename N>
  static cudaError_t Sum(void* d_temp_storage, size_t& temp_storage_bytes, InIt d_in, OutIt d_out, N num_items,
                         cudaStream_t stream = nullptr) {
    (void)stream;
    cudaError_t err;
    if (sim_detail::size_query(d_temp_storage, temp_storage_bytes, &err)) return err;
    using Acc = std::remove_cv_t<std::remove_reference_t<decltype(*d_in)>>;
    Acc acc{};
    for (int64_t i = 0; i < int64_t(num_items); ++i) acc = acc + d_in[i];
    *d_out = acc;
    return cudaSuccess;
  }
};

}  // namespace cub
