// Force-included (g++ -include) before every CUDA source the harness compiles
// as host C++. It pulls in the CUDA headers the way g++ sees them (qualifiers
// expand to nothing, no __CUDACC__, no __CUDA_ARCH__), then supplies what a
// kernel needs to run on the CPU: the built-in index variables (per simulated
// thread), __syncthreads (a fiber switch or a real barrier), __shared__
// (static storage in a section that is poisoned before every block), atomics,
// intrinsics, and the launch entry point that the rewritten `<<<...>>>` calls.
#pragma once

#if defined(__CUDACC__) || defined(__CUDA_ARCH__)
#error "sim_prelude.h is for host compilers only"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#ifndef SIM_THREADS
#define SIM_THREADS 0  // 1: a std::thread per simulated thread (ThreadSanitizer build)
#endif

namespace sim {

// Index variables of the running simulated thread. Fibers all run on one OS
// thread: the scheduler rewrites the context before it resumes a fiber. With
// real threads every thread owns its copy.
struct ThreadCtx {
  uint3 tid, bid;
  dim3 bdim, gdim;
};
#if SIM_THREADS
extern thread_local ThreadCtx ctx;
#else
extern ThreadCtx ctx;
#endif

struct LaunchCfg {
  dim3 grid, block;
  size_t shmem;
  cudaStream_t stream;
};
inline LaunchCfg cfg(dim3 grid, dim3 block, size_t shmem = 0, cudaStream_t stream = nullptr) {
  return LaunchCfg{grid, block, shmem, stream};
}

// Where a launch was written (kernel expression, file, line), for messages.
struct Site {
  const char* what;
  const char* file;
  int line;
};

using BodyFn = void (*)(void* closure);
// Runs body(closure) once per simulated thread of every block of the grid.
void run_grid(const LaunchCfg& c, const Site& site, BodyFn body, void* closure);

// `kernel<<<c>>>(args...)` is rewritten into launch(site, c, [](auto&&... a) { kernel(a...); }, args...):
// the arguments are evaluated once, stored by value, and every simulated thread
// calls the kernel with its own copies (kernel parameters are per thread).
template <typename F, typename... Args>
void launch(const Site& site, const LaunchCfg& c, F f, Args&&... args) {
  std::tuple<std::decay_t<Args>...> stored(std::forward<Args>(args)...);
  auto body = [&]() { std::apply(f, stored); };
  run_grid(c, site, [](void* p) { (*static_cast<decltype(body)*>(p))(); }, &body);
}

// Block-wide barrier; `file`/`line` identify the call site so that threads
// waiting at different barriers are reported.
void syncthreads(const char* file, int line);
int syncthreads_count(int pred, const char* file, int line);

// Linear index of the running thread in its block, and the block size.
inline unsigned linear_tid() { return ctx.tid.x + ctx.bdim.x * (ctx.tid.y + ctx.bdim.y * ctx.tid.z); }
inline unsigned block_threads() { return ctx.bdim.x * ctx.bdim.y * ctx.bdim.z; }

// Run-time configuration (set from Python through the C API).
enum class Order : int { kForward = 0, kReverse = 1, kRandom = 2 };
enum class ReduceOrder : int { kCub = 0, kSequential = 1, kRandom = 2 };
ReduceOrder reduce_order();
uint64_t random_u64();  // the harness's seeded generator
unsigned char poison_byte();
void fill_poison(void* p, size_t bytes);

// Errors found by the harness (barrier misuse, bad launch configuration).
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

template <typename T>
inline std::atomic_ref<T> aref(T* p) {
  return std::atomic_ref<T>(*p);
}

}  // namespace sim

// ---- qualifiers -------------------------------------------------------------
// Blocks run one after another, so a block's shared memory can be static
// storage; the section lets the harness poison all of it before each block.
#undef __shared__
#define __shared__ static __attribute__((section("sim_shared")))
#undef __launch_bounds__
#define __launch_bounds__(...)
#ifndef __grid_constant__
#define __grid_constant__
#endif

// ---- built-in variables ------------------------------------------------------
#define threadIdx (static_cast<const uint3&>(::sim::ctx.tid))
#define blockIdx (static_cast<const uint3&>(::sim::ctx.bid))
#define blockDim (static_cast<const dim3&>(::sim::ctx.bdim))
#define gridDim (static_cast<const dim3&>(::sim::ctx.gdim))
#define warpSize 32

// ---- synchronisation ----------------------------------------------------------
#define __syncthreads() ::sim::syncthreads(__FILE__, __LINE__)
#define __syncthreads_count(pred) ::sim::syncthreads_count((pred) ? 1 : 0, __FILE__, __LINE__)
#define __syncthreads_or(pred) (::sim::syncthreads_count((pred) ? 1 : 0, __FILE__, __LINE__) != 0)
#define __syncthreads_and(pred) \
  (::sim::syncthreads_count((pred) ? 1 : 0, __FILE__, __LINE__) == int(::sim::block_threads()))
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- atomics (relaxed, like CUDA's; real atomics in the threaded build) -------
#define SIM_ATOMIC_RMW(NAME, OP, T) \
  inline T NAME(T* address, T val) { return ::sim::aref(address).OP(val, std::memory_order_relaxed); }
SIM_ATOMIC_RMW(atomicAdd, fetch_add, int)
SIM_ATOMIC_RMW(atomicAdd, fetch_add, unsigned int)
SIM_ATOMIC_RMW(atomicAdd, fetch_add, unsigned long long)
SIM_ATOMIC_RMW(atomicAdd, fetch_add, long long)
SIM_ATOMIC_RMW(atomicAdd, fetch_add, float)
SIM_ATOMIC_RMW(atomicAdd, fetch_add, double)
SIM_ATOMIC_RMW(atomicSub, fetch_sub, int)
SIM_ATOMIC_RMW(atomicSub, fetch_sub, unsigned int)
SIM_ATOMIC_RMW(atomicAnd, fetch_and, int)
SIM_ATOMIC_RMW(atomicAnd, fetch_and, unsigned int)
SIM_ATOMIC_RMW(atomicAnd, fetch_and, unsigned long long)
SIM_ATOMIC_RMW(atomicOr, fetch_or, int)
SIM_ATOMIC_RMW(atomicOr, fetch_or, unsigned int)
SIM_ATOMIC_RMW(atomicOr, fetch_or, unsigned long long)
SIM_ATOMIC_RMW(atomicXor, fetch_xor, int)
SIM_ATOMIC_RMW(atomicXor, fetch_xor, unsigned int)
SIM_ATOMIC_RMW(atomicXor, fetch_xor, unsigned long long)
SIM_ATOMIC_RMW(atomicExch, exchange, int)
SIM_ATOMIC_RMW(atomicExch, exchange, unsigned int)
SIM_ATOMIC_RMW(atomicExch, exchange, unsigned long long)
SIM_ATOMIC_RMW(atomicExch, exchange, float)
#undef SIM_ATOMIC_RMW

template <typename T>
inline T sim_atomic_cas(T* address, T compare, T val) {
  ::sim::aref(address).compare_exchange_strong(compare, val, std::memory_order_relaxed);
  return compare;  // the old value either way
}
inline int atomicCAS(int* a, int c, int v) { return sim_atomic_cas(a, c, v); }
inline unsigned int atomicCAS(unsigned int* a, unsigned int c, unsigned int v) { return sim_atomic_cas(a, c, v); }
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long c, unsigned long long v) {
  return sim_atomic_cas(a, c, v);
}
inline unsigned short atomicCAS(unsigned short* a, unsigned short c, unsigned short v) {
  return sim_atomic_cas(a, c, v);
}

template <typename T, typename Pick>
inline T sim_atomic_update(T* address, T val, Pick pick) {
  auto r = ::sim::aref(address);
  T old = r.load(std::memory_order_relaxed);
  while (!r.compare_exchange_weak(old, pick(old, val), std::memory_order_relaxed)) {
  }
  return old;
}
#define SIM_ATOMIC_MINMAX(T)                                                \
  inline T atomicMax(T* a, T v) {                                           \
    return sim_atomic_update(a, v, [](T x, T y) { return x < y ? y : x; }); \
  }                                                                         \
  inline T atomicMin(T* a, T v) {                                           \
    return sim_atomic_update(a, v, [](T x, T y) { return y < x ? y : x; }); \
  }
SIM_ATOMIC_MINMAX(int)
SIM_ATOMIC_MINMAX(unsigned int)
SIM_ATOMIC_MINMAX(long long)
SIM_ATOMIC_MINMAX(unsigned long long)
#undef SIM_ATOMIC_MINMAX
inline unsigned int atomicInc(unsigned int* a, unsigned int v) {
  return sim_atomic_update(a, v, [](unsigned int x, unsigned int y) { return x >= y ? 0u : x + 1; });
}
inline unsigned int atomicDec(unsigned int* a, unsigned int v) {
  return sim_atomic_update(a, v, [](unsigned int x, unsigned int y) { return (x == 0 || x > y) ? y : x - 1; });
}

// ---- intrinsics -----------------------------------------------------------------
template <typename To, typename From>
inline To sim_bits(From v) {
  static_assert(sizeof(To) == sizeof(From), "size mismatch");
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline unsigned int __brev(unsigned int x) {
  unsigned int r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned int __float_as_uint(float x) { return sim_bits<unsigned int>(x); }
inline int __float_as_int(float x) { return sim_bits<int>(x); }
inline float __uint_as_float(unsigned int x) { return sim_bits<float>(x); }
inline float __int_as_float(int x) { return sim_bits<float>(x); }
inline long long __double_as_longlong(double x) { return sim_bits<long long>(x); }
inline double __longlong_as_double(long long x) { return sim_bits<double>(x); }
// Correctly rounded single operations (the harness compiles with
// -ffp-contract=off, so plain operators are never fused).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return __builtin_fma(a, b, c); }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
