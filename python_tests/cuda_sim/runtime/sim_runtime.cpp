// The harness's execution engine: runs a grid block after block; the threads
// of a block are fibers (switched at __syncthreads) or, with SIM_THREADS=1,
// real threads meeting at a real barrier (for ThreadSanitizer). Also the host
// versions of the CUDA runtime calls the launchers make.
#include "sim_prelude.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SIM_ASAN 1
#else
#define SIM_ASAN 0
#endif

// Fibers switch with a few lines of x86-64 assembly; elsewhere (or with
// -DSIM_FORCE_UCONTEXT) with ucontext, which is portable but makes a system
// call per switch.
#if !SIM_THREADS && (!defined(__x86_64__) || defined(SIM_FORCE_UCONTEXT))
#define SIM_UCONTEXT 1
#include <ucontext.h>
#else
#define SIM_UCONTEXT 0
#endif

// Shared memory: every __shared__ variable lives in this section (see the
// prelude). Weak, so that a library without any still links.
extern "C" {
extern unsigned char __start_sim_shared[] __attribute__((weak));
extern unsigned char __stop_sim_shared[] __attribute__((weak));
}

namespace sim {

#if SIM_THREADS
thread_local ThreadCtx ctx;
#else
ThreadCtx ctx;
#endif

namespace {

// splitmix64: small, fast, and good enough to shuffle threads.
struct Rng {
  uint64_t state = 0;
  uint64_t operator()() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

struct Config {
  Order order = Order::kForward;
  ReduceOrder reduce = ReduceOrder::kCub;
  unsigned char poison = 0xA5;
  Rng rng;
};
Config config;

std::string format(const char* fmt, va_list ap) {
  char buf[2048];
  vsnprintf(buf, sizeof buf, fmt, ap);
  return buf;
}

std::string where(const Site& s) {
  return std::string(s.what) + " launched at " + s.file + ":" + std::to_string(s.line);
}

std::string tid_str(const uint3& t) {
  return "(" + std::to_string(t.x) + "," + std::to_string(t.y) + "," + std::to_string(t.z) + ")";
}

uint3 unflatten(unsigned i, const dim3& d) { return make_uint3(i % d.x, (i / d.x) % d.y, i / (d.x * d.y)); }

// A permutation of 0..n-1 in the configured order.
void make_order(std::vector<unsigned>& out, unsigned n) {
  out.resize(n);
  std::iota(out.begin(), out.end(), 0u);
  if (config.order == Order::kReverse) {
    std::reverse(out.begin(), out.end());
  } else if (config.order == Order::kRandom) {
    for (unsigned i = n; i > 1; --i) std::swap(out[i - 1], out[config.rng() % i]);
  }
}

// Fills shared memory with the poison byte. Under ASan the section also holds
// the redzones between variables, which memset (intercepted) would report:
// write them with uninstrumented stores instead.
#if SIM_ASAN
__attribute__((no_sanitize("address"))) void raw_fill(unsigned char* p, size_t n, unsigned char v) {
  volatile uint64_t* q = reinterpret_cast<volatile uint64_t*>(p);
  const uint64_t word = 0x0101010101010101ull * v;
  size_t i = 0;
  for (; (i + 1) * 8 <= n && reinterpret_cast<uintptr_t>(p) % 8 == 0; ++i) q[i] = word;
  for (size_t k = i * 8; k < n; ++k) reinterpret_cast<volatile unsigned char*>(p)[k] = v;
}
#else
void raw_fill(unsigned char* p, size_t n, unsigned char v) { std::memset(p, v, n); }
#endif

void poison_shared() {
  if (__start_sim_shared != nullptr && __stop_sim_shared != nullptr && __stop_sim_shared > __start_sim_shared) {
    raw_fill(__start_sim_shared, size_t(__stop_sim_shared - __start_sim_shared), config.poison);
  }
}

void check_config(const LaunchCfg& c, const Site& site) {
  const dim3 g = c.grid, b = c.block;
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || threads == 0) {
    fail("%s: empty launch configuration grid (%u,%u,%u) block (%u,%u,%u) (CUDA: invalid configuration argument)",
         where(site).c_str(), g.x, g.y, g.z, b.x, b.y, b.z);
  }
  if (threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64) {
    fail("%s: block (%u,%u,%u) exceeds CUDA's limits (1024 threads, z <= 64)", where(site).c_str(), b.x, b.y, b.z);
  }
  if (g.x > 2147483647u || g.y > 65535u || g.z > 65535u) {
    fail("%s: grid (%u,%u,%u) exceeds CUDA's limits (x < 2^31, y and z <= 65535)", where(site).c_str(), g.x, g.y, g.z);
  }
  if (1ull * g.x * g.y * g.z > (1ull << 28)) {
    fail("%s: grid (%u,%u,%u) has more blocks than the harness runs (2^28)", where(site).c_str(), g.x, g.y, g.z);
  }
  if (c.shmem != 0) {
    fail("%s: dynamic shared memory (%zu bytes) is not supported by the harness", where(site).c_str(), c.shmem);
  }
}

struct HarnessError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#if !SIM_THREADS
// ---- fibers ------------------------------------------------------------------------

#if SIM_ASAN
constexpr size_t kStackSize = 1 << 20;
#else
constexpr size_t kStackSize = 256 << 10;
#endif

// A simulated thread: not started, running, waiting at a barrier, ready to
// continue past it, or done.
enum class State { kNotStarted, kRunning, kWaiting, kReady, kDone };

struct Fiber;

struct Thread {
  uint3 tid;
  State state = State::kNotStarted;
  Fiber* fiber = nullptr;      // the fiber it runs on, once started
  const char* file = nullptr;  // the barrier it waits at
  int line = 0;
  int pred = 0;
  int count = 0;  // __syncthreads_count result
};

// A fiber is a stack on which threads run. A fresh fiber starts the block's
// not-yet-started threads one after another (in the configured order) until
// one of them waits at a barrier; that thread keeps the fiber, and the
// scheduler starts another fiber for the rest. So a block that never reaches
// a barrier costs one switch, not one per thread.
struct Fiber {
  void* sp = nullptr;  // saved stack pointer (x86-64 switch) while suspended
#if SIM_UCONTEXT
  ucontext_t uc;
#endif
  unsigned char* stack = nullptr;  // lowest usable byte
  void* fake_stack = nullptr;      // ASan's fake stack while suspended
  bool finished = false;
};

struct Scheduler {
  std::vector<Fiber*> pool;  // idle fibers (stacks kept for reuse)
  std::vector<Fiber*> all;
  std::vector<Thread> threads;
  std::vector<unsigned> start_order;
  unsigned nthreads = 0, next_start = 0;
  Thread* current = nullptr;
  void* main_sp = nullptr;
#if SIM_UCONTEXT
  ucontext_t main_uc;
#endif
  void* main_fake_stack = nullptr;
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
  BodyFn body = nullptr;
  void* closure = nullptr;
  std::exception_ptr error;
  bool dirty = false;  // fibers abandoned mid-run (after an error)
  bool running = false;
  ~Scheduler();
};
Scheduler sched;

#if !SIM_UCONTEXT
// void sim_switch(void** save_sp, void* new_sp): saves the callee-saved
// registers on the current stack, stores the stack pointer in *save_sp, and
// resumes the context saved at new_sp. The FP control words (MXCSR, x87 CW)
// are not switched: all fibers share the thread's floating-point environment
// (saving them made up most of a switch's cost).
asm(R"(
  .text
  .p2align 4
  .type sim_switch,@function
sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size sim_switch, .-sim_switch

  .p2align 4
  .type sim_fiber_start,@function
sim_fiber_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size sim_fiber_start, .-sim_fiber_start
)");
extern "C" void sim_switch(void** save_sp, void* new_sp);
extern "C" void sim_fiber_start();
#endif

void fiber_main(void* arg);

unsigned char* new_stack() {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  void* p =
      mmap(nullptr, kStackSize + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("sim: cannot map a fiber stack");
  mprotect(p, page, PROT_NONE);  // guard page below the stack
  return static_cast<unsigned char*>(p) + page;
}

Scheduler::~Scheduler() {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  for (Fiber* f : all) {
    munmap(f->stack - page, kStackSize + page);
    delete f;
  }
}

Fiber* acquire_fiber() {
  Fiber* f;
  if (sched.pool.empty()) {
    f = new Fiber;
    f->stack = new_stack();
    sched.all.push_back(f);
  } else {
    f = sched.pool.back();
    sched.pool.pop_back();
  }
  f->finished = false;
  f->fake_stack = nullptr;
#if SIM_UCONTEXT
  getcontext(&f->uc);
  f->uc.uc_stack.ss_sp = f->stack;
  f->uc.uc_stack.ss_size = kStackSize;
  f->uc.uc_link = nullptr;
  // makecontext passes ints; split the pointer.
  const uintptr_t a = reinterpret_cast<uintptr_t>(f);
  makecontext(&f->uc, reinterpret_cast<void (*)()>(+[](unsigned lo, unsigned hi) {
    fiber_main(reinterpret_cast<void*>(uintptr_t(lo) | (uintptr_t(hi) << 32)));
  }),
              2, unsigned(a & 0xffffffffu), unsigned(a >> 32));
#else
  // Initial frame, popped by sim_switch: r15..r12, rbx, rbp, then the return
  // address sim_fiber_start, which calls r13(r12). After the ret the stack
  // pointer is 16-byte aligned, as a call site requires.
  uint64_t* top = reinterpret_cast<uint64_t*>(f->stack + kStackSize);
  uint64_t* frame = top - 9;
  frame[0] = 0;                                        // r15
  frame[1] = 0;                                        // r14
  frame[2] = reinterpret_cast<uint64_t>(&fiber_main);  // r13
  frame[3] = reinterpret_cast<uint64_t>(f);            // r12
  frame[4] = 0;                                        // rbx
  frame[5] = 0;                                        // rbp
  frame[6] = reinterpret_cast<uint64_t>(&sim_fiber_start);
  frame[7] = 0;
  frame[8] = 0;
  f->sp = frame;
#endif
  return f;
}

// Scheduler -> fiber; returns when the fiber yields or finishes (then it goes
// back to the pool).
void resume(Fiber& f) {
#if SIM_ASAN
  __sanitizer_start_switch_fiber(&sched.main_fake_stack, f.stack, kStackSize);
#endif
#if SIM_UCONTEXT
  swapcontext(&sched.main_uc, &f.uc);
#else
  sim_switch(&sched.main_sp, f.sp);
#endif
#if SIM_ASAN
  __sanitizer_finish_switch_fiber(sched.main_fake_stack, nullptr, nullptr);
#endif
  sched.current = nullptr;
  if (f.finished) sched.pool.push_back(&f);
}

// Fiber -> scheduler. `final`: the fiber is done and never resumes.
void yield_to_scheduler(Fiber& f, bool final) {
#if SIM_ASAN
  __sanitizer_start_switch_fiber(final ? nullptr : &f.fake_stack, sched.main_stack_bottom, sched.main_stack_size);
#endif
#if SIM_UCONTEXT
  swapcontext(&f.uc, &sched.main_uc);
#else
  sim_switch(&f.sp, sched.main_sp);
#endif
#if SIM_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, &sched.main_stack_bottom, &sched.main_stack_size);
#endif
  (void) final;
}

void fiber_main(void* arg) {
  Fiber& f = *static_cast<Fiber*>(arg);
#if SIM_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &sched.main_stack_bottom, &sched.main_stack_size);
#endif
  // Start threads until every thread of the block has started (a thread that
  // waits at a barrier keeps this fiber; when it finishes, so does the loop).
  while (sched.next_start < sched.nthreads && !sched.error) {
    Thread& t = sched.threads[sched.start_order[sched.next_start++]];
    t.fiber = &f;
    t.state = State::kRunning;
    sched.current = &t;
    ctx.tid = t.tid;
    try {
      sched.body(sched.closure);
    } catch (...) {
      if (!sched.error) sched.error = std::current_exception();
    }
    t.state = State::kDone;
  }
  f.finished = true;
  yield_to_scheduler(f, true);
  __builtin_trap();  // a finished fiber is never resumed
}

void abandon_fibers() {
  sched.pool.clear();
  for (Fiber* f : sched.all) {
#if SIM_ASAN
    __asan_unpoison_memory_region(f->stack, kStackSize);
#endif
    sched.pool.push_back(f);
  }
  sched.dirty = false;
}

void check_error() {
  if (sched.error) {
    sched.dirty = true;
    std::exception_ptr e = sched.error;
    sched.error = nullptr;
    std::rethrow_exception(e);
  }
}

void run_block(const LaunchCfg& c, const Site& site, unsigned nthreads, const std::vector<uint3>& tids) {
  sched.threads.resize(nthreads);
  for (unsigned i = 0; i < nthreads; ++i) {
    Thread& t = sched.threads[i];
    t.tid = tids[i];
    t.state = State::kNotStarted;
    t.fiber = nullptr;
  }
  sched.nthreads = nthreads;
  sched.next_start = 0;
  make_order(sched.start_order, nthreads);
  std::vector<unsigned> order;
  for (bool first = true;; first = false) {
    if (first) {
      while (sched.next_start < nthreads) {
        resume(*acquire_fiber());
        check_error();
      }
    } else {
      make_order(order, nthreads);
      for (unsigned i : order) {
        Thread& t = sched.threads[i];
        if (t.state != State::kReady) continue;
        t.state = State::kRunning;
        sched.current = &t;
        ctx.tid = t.tid;
        resume(*t.fiber);
        check_error();
      }
    }
    unsigned waiting = 0, done = 0;
    const Thread* first_wait = nullptr;
    const Thread* first_done = nullptr;
    for (unsigned i = 0; i < nthreads; ++i) {
      const Thread& t = sched.threads[i];
      if (t.state == State::kWaiting) {
        ++waiting;
        if (!first_wait) first_wait = &t;
      } else {
        ++done;
        if (!first_done) first_done = &t;
      }
    }
    if (waiting == 0) return;
    sched.dirty = true;
    if (done > 0) {
      fail("%s, block %s: thread %s exited while thread %s waits at __syncthreads() at %s:%d", where(site).c_str(),
           tid_str(ctx.bid).c_str(), tid_str(first_done->tid).c_str(), tid_str(first_wait->tid).c_str(),
           first_wait->file, first_wait->line);
    }
    int count = 0;
    for (unsigned i = 0; i < nthreads; ++i) {
      const Thread& t = sched.threads[i];
      if (t.line != first_wait->line || (t.file != first_wait->file && std::strcmp(t.file, first_wait->file) != 0)) {
        fail("%s, block %s: threads wait at different barriers: thread %s at %s:%d, thread %s at %s:%d",
             where(site).c_str(), tid_str(ctx.bid).c_str(), tid_str(first_wait->tid).c_str(), first_wait->file,
             first_wait->line, tid_str(t.tid).c_str(), t.file, t.line);
      }
      count += t.pred;
    }
    sched.dirty = false;
    for (unsigned i = 0; i < nthreads; ++i) {
      sched.threads[i].state = State::kReady;
      sched.threads[i].count = count;
    }
  }
}

#else  // SIM_THREADS
// ---- real threads ------------------------------------------------------------------

struct Abort {};

// One phase's gate: the threads that arrived wait here until the last one
// opens it.
struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false, aborted = false;
  int result = 0;
};

// __syncthreads for real threads. Counting happens under one mutex, but the
// waiting happens at a gate per phase (two, alternating), so that a thread
// arriving at the next barrier creates no happens-before edge to a thread
// still waking from this one: ThreadSanitizer sees exactly the ordering a
// barrier gives (every arrival before every departure) and so reports races
// between the code after a barrier and the code before the next one.
struct BlockBarrier {
  std::mutex m;
  unsigned threads = 0, alive = 0, arrived = 0;
  uint64_t generation = 0;
  int count = 0;
  const char* file = nullptr;
  int line = 0;
  uint3 first_tid{};
  std::string error;
  bool aborted = false;
  const Site* site = nullptr;
  Gate gates[2];

  // With m held.
  void abort_locked(std::string msg) {
    if (error.empty()) error = std::move(msg);
    aborted = true;
    for (Gate& g : gates) {
      std::lock_guard<std::mutex> lock(g.m);
      g.aborted = true;
      g.cv.notify_all();
    }
  }
  void abort() {
    std::lock_guard<std::mutex> lock(m);
    abort_locked("");
  }
  // All alive threads arrived (m held): check and open this phase's gate.
  void complete() {
    if (alive < threads) {
      abort_locked(where(*site) + ", block " + tid_str(ctx.bid) + ": " + std::to_string(threads - alive) +
                   " thread(s) exited while thread " + tid_str(first_tid) + " waits at __syncthreads() at " + file +
                   ":" + std::to_string(line));
      return;
    }
    Gate& prev = gates[(generation + 1) % 2];  // every thread has left it: all arrived here
    {
      std::lock_guard<std::mutex> lock(prev.m);
      prev.open = false;
    }
    Gate& gate = gates[generation % 2];
    {
      std::lock_guard<std::mutex> lock(gate.m);
      gate.result = count;
      gate.open = true;
      gate.cv.notify_all();
    }
    arrived = 0;
    count = 0;
    file = nullptr;
    ++generation;
  }
  int wait(const char* f, int l, int pred) {
    Gate* gate;
    {
      std::lock_guard<std::mutex> lock(m);
      if (aborted) throw Abort{};
      if (file == nullptr) {
        file = f;
        line = l;
        first_tid = ctx.tid;
      } else if (l != line || (f != file && std::strcmp(f, file) != 0)) {
        abort_locked(where(*site) + ", block " + tid_str(ctx.bid) + ": threads wait at different barriers: thread " +
                     tid_str(first_tid) + " at " + file + ":" + std::to_string(line) + ", thread " + tid_str(ctx.tid) +
                     " at " + f + ":" + std::to_string(l));
        throw Abort{};
      }
      count += pred;
      gate = &gates[generation % 2];
      if (++arrived == alive) complete();
      if (aborted) throw Abort{};
    }
    std::unique_lock<std::mutex> lock(gate->m);
    gate->cv.wait(lock, [&] { return gate->open || gate->aborted; });
    if (gate->aborted) throw Abort{};
    return gate->result;
  }
  void exit_thread() {
    std::lock_guard<std::mutex> lock(m);
    --alive;
    if (arrived > 0 && arrived == alive && !aborted) complete();
  }
};
BlockBarrier* current_barrier = nullptr;  // of the block being run (blocks run one at a time)

// Worker threads, kept across blocks and launches (creating a thread under
// ThreadSanitizer costs far more than running a small block). Worker i runs
// simulated thread i of each block and has its own wake-up condition, so a
// block wakes only the threads it needs. Mutexes and condition variables
// order everything: ThreadSanitizer sees the happens-before edges a GPU has
// between consecutive blocks and launches, and nothing more.
struct Worker {
  std::mutex m;
  std::condition_variable cv;
  uint64_t generation = 0;
  bool quit = false;
  unsigned index = 0;
  pthread_t thread;
};

struct Pool {
  std::vector<std::unique_ptr<Worker>> workers;
  std::mutex m;  // guards remaining and errors
  std::condition_variable done_cv;
  unsigned remaining = 0;
  std::vector<std::exception_ptr> errors;
  // The block being run: written before the workers are woken.
  BodyFn body = nullptr;
  void* closure = nullptr;
  BlockBarrier* bar = nullptr;
  const std::vector<uint3>* tids = nullptr;
  uint3 bid{};
  dim3 bdim, gdim;

  void work(Worker& w) {
    const unsigned i = w.index;
    uint64_t seen = 0;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(w.m);
        w.cv.wait(lock, [&] { return w.quit || w.generation != seen; });
        if (w.quit) return;
        seen = w.generation;
      }
      ctx.tid = (*tids)[i];
      ctx.bid = bid;
      ctx.bdim = bdim;
      ctx.gdim = gdim;
      std::exception_ptr err;
      try {
        body(closure);
      } catch (const Abort&) {
      } catch (...) {
        err = std::current_exception();
        bar->abort();
      }
      bar->exit_thread();
      std::lock_guard<std::mutex> lock(m);
      if (err) errors[i] = err;
      if (--remaining == 0) done_cv.notify_all();
    }
  }
  ~Pool() {
    for (auto& w : workers) {
      std::lock_guard<std::mutex> lock(w->m);
      w->quit = true;
      w->cv.notify_all();
    }
    for (auto& w : workers) pthread_join(w->thread, nullptr);
  }
};
Pool pool;

void* worker_main(void* arg) {
  pool.work(*static_cast<Worker*>(arg));
  return nullptr;
}

// Small stacks: a block has up to 1024 threads.
void spawn_worker() {
  auto w = std::make_unique<Worker>();
  w->index = unsigned(pool.workers.size());
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 512 << 10);
  const int rc = pthread_create(&w->thread, &attr, worker_main, w.get());
  pthread_attr_destroy(&attr);
  if (rc != 0) throw std::runtime_error("sim: cannot create a worker thread");
  pool.workers.push_back(std::move(w));
}

void run_block(const LaunchCfg&, const Site& site, unsigned nthreads, BodyFn body, void* closure,
               const std::vector<uint3>& tids) {
  BlockBarrier bar;
  bar.threads = bar.alive = nthreads;
  bar.site = &site;
  current_barrier = &bar;
  while (pool.workers.size() < nthreads) spawn_worker();
  pool.body = body;
  pool.closure = closure;
  pool.bar = &bar;
  pool.tids = &tids;
  pool.bid = ctx.bid;
  pool.bdim = ctx.bdim;
  pool.gdim = ctx.gdim;
  {
    std::lock_guard<std::mutex> lock(pool.m);
    pool.errors.assign(nthreads, nullptr);
    pool.remaining = nthreads;
  }
  for (unsigned i = 0; i < nthreads; ++i) {
    Worker& w = *pool.workers[i];
    std::lock_guard<std::mutex> lock(w.m);
    ++w.generation;
    w.cv.notify_one();
  }
  {
    std::unique_lock<std::mutex> lock(pool.m);
    pool.done_cv.wait(lock, [] { return pool.remaining == 0; });
  }
  current_barrier = nullptr;
  for (auto& e : pool.errors) {
    if (e) std::rethrow_exception(e);
  }
  if (!bar.error.empty()) throw HarnessError(bar.error);
}
#endif

}  // namespace

// ---- public -------------------------------------------------------------------------

void fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string msg = format(fmt, ap);
  va_end(ap);
  throw HarnessError("cuda_sim: " + msg);
}

ReduceOrder reduce_order() { return config.reduce; }
uint64_t random_u64() { return config.rng(); }
unsigned char poison_byte() { return config.poison; }
void fill_poison(void* p, size_t bytes) {
  if (p && bytes) std::memset(p, config.poison, bytes);
}

int syncthreads_count(int pred, const char* file, int line) {
#if SIM_THREADS
  if (current_barrier == nullptr) fail("__syncthreads() outside a kernel (%s:%d)", file, line);
  return current_barrier->wait(file, line, pred);
#else
  Thread* t = sched.current;
  if (t == nullptr) fail("__syncthreads() outside a kernel (%s:%d)", file, line);
  t->state = State::kWaiting;
  t->file = file;
  t->line = line;
  t->pred = pred;
  yield_to_scheduler(*t->fiber, false);
  // The scheduler resumed us: every thread arrived at this barrier.
  return t->count;
#endif
}

void syncthreads(const char* file, int line) { (void)syncthreads_count(0, file, line); }

void run_grid(const LaunchCfg& c, const Site& site, BodyFn body, void* closure) {
  check_config(c, site);
#if !SIM_THREADS
  if (sched.running)
    fail("%s: launch from inside a kernel (dynamic parallelism) is not supported", where(site).c_str());
  if (sched.dirty) abandon_fibers();
  sched.body = body;
  sched.closure = closure;
  sched.error = nullptr;
  sched.running = true;
  struct Reset {
    ~Reset() { sched.running = false; }
  } reset;
#endif
  const unsigned nthreads = c.block.x * c.block.y * c.block.z;
  const unsigned long long nblocks = 1ull * c.grid.x * c.grid.y * c.grid.z;
  std::vector<unsigned> order;
  make_order(order, unsigned(nblocks));
  std::vector<uint3> tids(nthreads);
  for (unsigned i = 0; i < nthreads; ++i) tids[i] = unflatten(i, c.block);
  const ThreadCtx saved = ctx;
  ctx.bdim = c.block;
  ctx.gdim = c.grid;
  try {
    for (unsigned b : order) {
      ctx.bid = unflatten(b, c.grid);
      poison_shared();
#if SIM_THREADS
      run_block(c, site, nthreads, body, closure, tids);
#else
      run_block(c, site, nthreads, tids);
#endif
    }
  } catch (...) {
    ctx = saved;
    throw;
  }
  ctx = saved;
}

}  // namespace sim

// ---- configuration and errors, for the C API ------------------------------------------

extern "C" void sim_configure(int order, unsigned long long seed, int reduce_order, int poison) {
  sim::config.order = static_cast<sim::Order>(order);
  sim::config.reduce = static_cast<sim::ReduceOrder>(reduce_order);
  sim::config.poison = static_cast<unsigned char>(poison);
  sim::config.rng.state = seed;
}

extern "C" int sim_threads_mode() { return SIM_THREADS; }

// ---- host versions of the CUDA runtime: "device" memory is host memory ------------------

// The calls that pass between host and device, counted so that tests can check that an op
// never waits for the device or copies host memory (what CUDA-graph capture and sync-free
// code need): [0] stream/device synchronisations and synchronous copies, [1] device-to-host
// copies, [2] host-to-device copies (kinds as the caller names them; cudaMemcpyDefault and
// device-to-device copies count as neither).
static std::atomic<long long> host_traffic[3];

extern "C" void sim_host_traffic(long long* out, int reset) {
  for (int k = 0; k < 3; ++k) out[k] = reset ? host_traffic[k].exchange(0) : host_traffic[k].load();
}

static void count_copy(cudaMemcpyKind kind) {
  if (kind == cudaMemcpyDeviceToHost) ++host_traffic[1];
  if (kind == cudaMemcpyHostToDevice) ++host_traffic[2];
}

extern "C" {

cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t) {
  if (count) std::memset(p, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t count) {
  ++host_traffic[0];  // synchronous with respect to the host
  if (count) std::memset(p, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t) {
  count_copy(kind);
  if (count) std::memcpy(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  ++host_traffic[0];
  count_copy(kind);
  if (count) std::memcpy(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  ++host_traffic[0];
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  ++host_traffic[0];
  return cudaSuccess;
}
// Launch errors throw at the launch, so there is never one to report here.
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaPeekAtLastError(void) { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "cuda_sim: error code from a simulated CUDA call";
}
const char* cudaGetErrorName(cudaError_t error) { return error == cudaSuccess ? "cudaSuccess" : "cudaErrorSim"; }

}  // extern "C"
