// Poisoned CPU allocations while the harness runs a CUDA registration (sim.py): every tensor the
// registration code allocates (outputs, temporaries of TensorAllocator, contiguous copies) is
// filled with the poison byte, as fresh device memory holds garbage, so an output element or a
// temporary that a kernel fails to write shows up. Test-only code: it uses torch's C++ allocator
// interface (not the stable ABI) and is linked only into the harness.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cstring>

namespace sim {
unsigned char poison_byte();
}

namespace {

std::atomic<bool> poisoning{false};

class PoisoningAllocator final : public c10::Allocator {
 public:
  explicit PoisoningAllocator(c10::Allocator* inner) : inner_(inner) {}
  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr p = inner_->allocate(n);
    if (poisoning.load() && n > 0 && p.get() != nullptr) std::memset(p.get(), sim::poison_byte(), n);
    return p;
  }
  c10::DeleterFnPtr raw_deleter() const override { return inner_->raw_deleter(); }
  bool is_simple_data_ptr(const c10::DataPtr& p) const override { return inner_->is_simple_data_ptr(p); }
  void copy_data(void* dest, const void* src, std::size_t count) const override { inner_->copy_data(dest, src, count); }

 private:
  c10::Allocator* inner_;
};

}  // namespace

// Turns the poisoning on or off; the first call puts the allocator in front of torch's CPU one
// (where it stays: off, it only forwards).
extern "C" void sim_poison_allocations(int on) {
  static PoisoningAllocator* installed = [] {
    auto* a = new PoisoningAllocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(a, /*priority=*/255);
    return a;
  }();
  (void)installed;
  poisoning.store(on != 0);
}
