// Small kernels with deliberate bugs (and correct twins), compiled by the
// harness like the project's kernels, to show that it catches what it is
// meant to catch. Entry points follow the C API convention of sim_capi.cpp:
//   int sim_op_selftest_<name>(void* const* p, const int64_t* i, const double* d, int64_t* ret)
#include <cub/cub.cuh>

#include <cstdint>
#include <exception>
#include <string>

namespace {

constexpr int kThreads = 256;

// --- barrier misuse -------------------------------------------------------------------

// Only the first warp reaches the barrier; the others exit.
__global__ void barrier_partial_kernel(int* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// Even and odd threads wait at different barriers.
__global__ void barrier_mismatch_kernel(int* out) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// --- shared memory ---------------------------------------------------------------------

// Thread 0 never writes its slot: it reads uninitialised shared memory.
__global__ void shared_uninit_kernel(int* out) {
  __shared__ int s[kThreads];
  if (threadIdx.x > 0) s[threadIdx.x] = int(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

// Each thread reads its left neighbour's slot; `sync` selects the barrier
// between the write and the read. Without it, forward order still gives the
// right answer (the neighbour ran first): only other orders expose the bug.
__global__ void neighbour_kernel(const float* in, float* out, int sync) {
  __shared__ float s[kThreads];
  const unsigned t = threadIdx.x;
  s[t] = in[blockIdx.x * kThreads + t];
  if (sync) __syncthreads();
  out[blockIdx.x * kThreads + t] = s[t > 0 ? t - 1 : 0];
  if (!sync) __syncthreads();  // same number of barriers either way
}

// --- atomics ---------------------------------------------------------------------------

// Every thread adds 1 to one counter, atomically or with a plain +=.
__global__ void count_kernel(int* counter, int atomic) {
  if (atomic) {
    atomicAdd(counter, 1);
  } else {
    *counter += 1;
  }
}

// --- block reduction ---------------------------------------------------------------------

struct Item {
  float value;
  int index;
};

// Max value, ties to the lower index (`full`), or ties left to whichever
// operand comes first (`!full`), which depends on the combination order.
struct MaxItem {
  int full;
  Item operator()(const Item& a, const Item& b) const {
    if (a.value != b.value) return a.value > b.value ? a : b;
    if (full) return a.index < b.index ? a : b;
    return a;
  }
};

__global__ void argmax_kernel(const float* in, int n, int full, int* out) {
  using Reduce = cub::BlockReduce<Item, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  Item best{-1e30f, -1};
  for (int k = threadIdx.x; k < n; k += kThreads) {
    const Item it{in[k], k};
    if (best.index < 0 || MaxItem{1}(it, best).index == it.index) best = it;
  }
  const Item r = Reduce(tmp).Reduce(best, MaxItem{full});
  if (threadIdx.x == 0) *out = r.index;
}

// Two reductions through one TempStorage, with or without the barrier that
// CUB requires between them.
__global__ void two_sums_kernel(const int* in, int sync, int* out) {
  using Reduce = cub::BlockReduce<int, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int a = Reduce(tmp).Sum(in[threadIdx.x]);
  if (sync) __syncthreads();
  const int b = Reduce(tmp).Sum(in[kThreads + threadIdx.x]);
  if (!sync) __syncthreads();
  if (threadIdx.x == 0) {
    out[0] = a;
    out[1] = b;
  }
}

// --- memory errors and undefined behaviour (ASan, UBSan) ---------------------------------

// base + threadIdx.x overflows int for base near INT_MAX.
__global__ void overflow_kernel(int* out, int base) { out[threadIdx.x] = base + int(threadIdx.x); }

// Thread n-1 writes one element past the end.
__global__ void overrun_kernel(int* out, int n) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k < n) out[k + (k == n - 1 ? 1 : 0)] = k;
}

}  // namespace

extern "C" void sim_set_last_error(const char* msg);  // sim_capi.cpp

namespace {

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    sim_set_last_error(e.what());
  }
  return 1;
}

}  // namespace

#define SELFTEST(name) \
  extern "C" int sim_op_selftest_##name(void* const* p, const int64_t* i, const double* d, int64_t* ret)

// p: out int[256]
SELFTEST(barrier_partial) {
  (void)i, (void)d, (void)ret;
  return guarded([&] { barrier_partial_kernel<<<1, kThreads>>>(static_cast<int*>(p[0])); });
}

// p: out int[256]
SELFTEST(barrier_mismatch) {
  (void)i, (void)d, (void)ret;
  return guarded([&] { barrier_mismatch_kernel<<<1, kThreads>>>(static_cast<int*>(p[0])); });
}

// p: out int[256]
SELFTEST(shared_uninit) {
  (void)i, (void)d, (void)ret;
  return guarded([&] { shared_uninit_kernel<<<1, kThreads>>>(static_cast<int*>(p[0])); });
}

// p: in float[blocks * 256], out float[blocks * 256]; i: blocks, sync
SELFTEST(neighbour) {
  (void)d, (void)ret;
  return guarded([&] {
    neighbour_kernel<<<unsigned(i[0]), kThreads>>>(static_cast<const float*>(p[0]), static_cast<float*>(p[1]),
                                                   int(i[1]));
  });
}

// p: counter int[1]; i: blocks, threads per block, atomic
SELFTEST(count) {
  (void)d, (void)ret;
  return guarded([&] { count_kernel<<<unsigned(i[0]), unsigned(i[1])>>>(static_cast<int*>(p[0]), int(i[2])); });
}

// p: in float[n], out int[1]; i: n, full tie-break
SELFTEST(argmax) {
  (void)d, (void)ret;
  return guarded([&] {
    argmax_kernel<<<1, kThreads>>>(static_cast<const float*>(p[0]), int(i[0]), int(i[1]), static_cast<int*>(p[1]));
  });
}

// p: in int[512], out int[2]; i: sync
SELFTEST(two_sums) {
  (void)d, (void)ret;
  return guarded(
      [&] { two_sums_kernel<<<1, kThreads>>>(static_cast<const int*>(p[0]), int(i[0]), static_cast<int*>(p[1])); });
}

// p: out int[n]; i: n
SELFTEST(overrun) {
  (void)d, (void)ret;
  const int n = int(i[0]);
  return guarded([&] { overrun_kernel<<<(n + 63) / 64, 64>>>(static_cast<int*>(p[0]), n); });
}

// p: out int[32]; i: base
SELFTEST(overflow) {
  (void)d, (void)ret;
  return guarded([&] { overflow_kernel<<<1, 32>>>(static_cast<int*>(p[0]), int(i[0])); });
}

// The host CUB stand-ins on their own. p: keys in, keys out, values in (int64),
// values out; i: n, key type (0 float, 1 double, 2 int64), descending, begin_bit, end_bit
SELFTEST(sort_pairs) {
  (void)d, (void)ret;
  return guarded([&] {
    const int n = int(i[0]);
    auto run = [&](auto* keys_in) {
      using K = std::remove_const_t<std::remove_pointer_t<decltype(keys_in)>>;
      size_t bytes = 0;
      auto vi = static_cast<const int64_t*>(p[2]);
      auto vo = static_cast<int64_t*>(p[3]);
      auto ko = static_cast<K*>(p[1]);
      if (i[2]) {
        cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, keys_in, ko, vi, vo, n, int(i[3]), int(i[4]));
        std::string buf(bytes, '\0');
        cub::DeviceRadixSort::SortPairsDescending(buf.data(), bytes, keys_in, ko, vi, vo, n, int(i[3]), int(i[4]));
      } else {
        cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys_in, ko, vi, vo, n, int(i[3]), int(i[4]));
        std::string buf(bytes, '\0');
        cub::DeviceRadixSort::SortPairs(buf.data(), bytes, keys_in, ko, vi, vo, n, int(i[3]), int(i[4]));
      }
    };
    if (i[1] == 0)
      run(static_cast<const float*>(p[0]));
    else if (i[1] == 1)
      run(static_cast<const double*>(p[0]));
    else
      run(static_cast<const int64_t*>(p[0]));
  });
}

// p: items int64[n], flags uint8[n], out int64[n], count int[1], scan out int64[n]; i: n
SELFTEST(select_scan) {
  (void)d, (void)ret;
  return guarded([&] {
    const int n = int(i[0]);
    size_t bytes = 0;
    auto items = static_cast<const int64_t*>(p[0]);
    cub::DeviceSelect::Flagged(nullptr, bytes, items, static_cast<const uint8_t*>(p[1]), static_cast<int64_t*>(p[2]),
                               static_cast<int*>(p[3]), n);
    std::string buf(bytes, '\0');
    cub::DeviceSelect::Flagged(buf.data(), bytes, items, static_cast<const uint8_t*>(p[1]), static_cast<int64_t*>(p[2]),
                               static_cast<int*>(p[3]), n);
    bytes = 0;
    cub::DeviceScan::ExclusiveSum(nullptr, bytes, items, static_cast<int64_t*>(p[4]), n);
    std::string buf2(bytes, '\0');
    cub::DeviceScan::ExclusiveSum(buf2.data(), bytes, items, static_cast<int64_t*>(p[4]), n);
  });
}
