// SPDX-License-Identifier: MIT
/*
 * The Node binding: a thin layer over the client library (lkl_um.h).  The
 * API is designed in TypeScript (packages/core); this only moves system
 * calls and their results across.
 *
 *   start(options) -> Promise<Kernel>          boots in a worker thread
 *   kernel.submit(nr, tag, a0..a5)             starts a call (numbers or
 *                                              bigints), throws on EAGAIN;
 *                                              returns how many results it
 *                                              put in kernel.completions
 *   kernel.onCompletions(fn)                   fn(count) after results were
 *                                              written to kernel.completions
 *   kernel.completions                         Float64Array [tag, ret, ...]
 *   kernel.reap()                              puts the results there are
 *                                              in kernel.completions now;
 *                                              returns how many
 *   kernel.window / kernel.windowBase          the window as an ArrayBuffer,
 *                                              and its address
 *   kernel.alloc(size) / kernel.free(offset)   window buffers, by offset
 *   kernel.halt(timeoutMs) -> Promise<status>  in a worker thread
 *   kernel.sendFd(fd) -> token                 passes a disk image's fd
 *   kernel.close(), kernel.console(), kernel.pid, kernel.exitStatus()
 *
 * Results arrive on the event loop: a uv_poll handle on the client's event
 * fd, plus, while calls are in flight, a uv_idle handle that polls the
 * completion ring for a short while before the loop goes to sleep (the same
 * adaptive polling the C client does in a blocking call).  The handles keep
 * the loop alive only while calls are in flight.
 */

#include <napi.h>
#include <uv.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <string>

#include <lkl_um.h>
#include <lkl_um/host_cache.h>

namespace {

constexpr unsigned kMaxBatch = 1024;
constexpr uint64_t kDefaultSpinNs = 50000;
constexpr uint64_t kSubmitSpinNs = 3000;

uint64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

long ToLong(const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Int64Value(&lossless);
  }
  if (v.IsNumber()) return static_cast<long>(v.As<Napi::Number>().Int64Value());
  return 0;
}

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what) {
  Napi::Error e = Napi::Error::New(env, what);
  e.Set("errno", Napi::Number::New(env, -err));
  return e;
}

class Kernel;
std::set<Kernel*>* live_kernels;

class Kernel : public Napi::ObjectWrap<Kernel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "Kernel",
        {InstanceMethod("submit", &Kernel::Submit),
         InstanceMethod("onCompletions", &Kernel::OnCompletions),
         InstanceMethod("reap", &Kernel::ReapNow),
         InstanceMethod("alloc", &Kernel::Alloc),
         InstanceMethod("free", &Kernel::Free),
         InstanceMethod("halt", &Kernel::Halt),
         InstanceMethod("close", &Kernel::Close),
         InstanceMethod("console", &Kernel::Console),
         InstanceMethod("exitStatus", &Kernel::ExitStatus),
         InstanceMethod("inFlight", &Kernel::InFlight),
         InstanceMethod("sendFd", &Kernel::SendFd),
         InstanceAccessor("pid", &Kernel::Pid, nullptr)});
  }

  explicit Kernel(const Napi::CallbackInfo& info) : ObjectWrap(info) {
    k_ = static_cast<lkl_um*>(info[0].As<Napi::External<lkl_um>>().Data());
    spin_ns_ = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
    Napi::Env env = info.Env();
    uv_loop_t* loop;
    napi_get_uv_event_loop(env, &loop);

    // JavaScript sees the window through a mapping of its own, which lives
    // as long as the ArrayBuffer does, not only as long as the kernel: a
    // Buffer kept after shutdown must not point at unmapped memory.
    size_t size;
    void* base = lkl_um_window(k_, &size);
    void* view = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED,
                      lkl_um_window_fd(k_), 0);
    if (view == MAP_FAILED) throw ErrnoError(env, -errno, "cannot map the window");
    Napi::ArrayBuffer window = Napi::ArrayBuffer::New(
        env, view, size,
        [](Napi::Env, void* data, size_t* bytes) {
          munmap(data, *bytes);
          delete bytes;
        },
        new size_t(size));
    Value().Set("window", window);
    Value().Set("windowBase",
                Napi::BigInt::New(env, static_cast<uint64_t>(
                                           reinterpret_cast<uintptr_t>(base))));
    completions_ = Napi::Persistent(Napi::Float64Array::New(env, 2 * kMaxBatch));
    Value().Set("completions", completions_.Value());

    poll_ = new uv_poll_t;
    uv_poll_init(loop, poll_, lkl_um_event_fd(k_));
    poll_->data = this;
    uv_poll_start(poll_, UV_READABLE, [](uv_poll_t* h, int, int) {
      static_cast<Kernel*>(h->data)->Deliver();
    });
    uv_unref(reinterpret_cast<uv_handle_t*>(poll_));

    idle_ = new uv_idle_t;
    uv_idle_init(loop, idle_);
    idle_->data = this;
    live_kernels->insert(this);
  }

  ~Kernel() override { Release(0); }

  // Lets go of everything; the kernel halts by itself when it sees us go.
  void Release(unsigned timeout_ms) {
    if (!k_) return;
    live_kernels->erase(this);
    uv_close(reinterpret_cast<uv_handle_t*>(poll_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    uv_close(reinterpret_cast<uv_handle_t*>(idle_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
    lkl_um_close(k_, timeout_ms);
    k_ = nullptr;
  }

 private:
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!k_) throw ErrnoError(env, -ESHUTDOWN, "the kernel is closed");
    long args[6];
    for (int i = 0; i < 6; i++) args[i] = ToLong(info[2 + i]);
    int err = lkl_um_submit(k_, ToLong(info[0]), args,
                            static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value()));
    if (err) throw ErrnoError(env, err, "submit failed");
    if (!in_flight_++) uv_ref(reinterpret_cast<uv_handle_t*>(poll_));

    // A lone call (someone awaits each result before the next call) is
    // worth a short wait here: fast calls then complete without a turn of
    // the event loop.  Results come back in `completions`.
    if (in_flight_ == 1) {
      uint64_t until = NowNs() + kSubmitSpinNs;
      while (!lkl_um_pending(k_) && NowNs() < until) __builtin_ia32_pause();
      if (lkl_um_pending(k_)) return Napi::Number::New(env, Reap());
    }
    StartSpinning();
    return Napi::Number::New(env, 0);
  }

  // Reaps results into `completions`; returns how many.
  int Reap() {
    lkl_um_completion batch[kMaxBatch];
    int n = lkl_um_reap(k_, batch, kMaxBatch);
    if (n <= 0) return 0;
    Napi::Float64Array out = completions_.Value();
    for (int i = 0; i < n; i++) {
      out[2 * i] = static_cast<double>(batch[i].tag);
      out[2 * i + 1] = static_cast<double>(batch[i].ret);
    }
    in_flight_ -= n;
    if (!in_flight_) {
      uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
      StopSpinning();
    }
    return n;
  }

  // Polls from the idle handle until a reap finds nothing, which also asks
  // the kernel to ring when the next result comes.
  void StartSpinning() {
    spin_until_ = NowNs() + spin_ns_;
    if (spinning_) return;
    spinning_ = true;
    uv_idle_start(idle_, [](uv_idle_t* h) {
      static_cast<Kernel*>(h->data)->Spin();
    });
  }

  // One turn of the loop while spinning: wait a few microseconds for a
  // result here, which is cheaper than a loop iteration, then deliver.
  void Spin() {
    constexpr uint64_t kTurnNs = 5000;
    uint64_t now = NowNs(), turn_end = now + kTurnNs;
    while (!lkl_um_pending(k_) && now < turn_end && now < spin_until_) {
      __builtin_ia32_pause();
      now = NowNs();
    }
    if (lkl_um_pending(k_)) {
      Deliver();
    } else if (now >= spin_until_ && !Deliver()) {
      StopSpinning();  // that reap found nothing: the doorbell is armed
    }
  }

  void StopSpinning() {
    if (!spinning_) return;
    spinning_ = false;
    uv_idle_stop(idle_);
  }

  // Reaps results and hands them to JavaScript; returns how many.  Only a
  // reap that finds nothing arms the doorbell, so while calls are in flight
  // this keeps reaping, here or from the idle handle, until one does.
  unsigned Deliver() {
    constexpr int kBatchesPerTurn = 4;
    unsigned total = 0;
    int n = 0;
    for (int batch = 0; k_ && batch < kBatchesPerTurn; batch++) {
      n = DeliverBatch();
      if (n <= 0) break;
      total += n;
    }
    if (n > 0 && in_flight_) StartSpinning();
    return total;
  }

  int DeliverBatch() {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    int n = Reap();
    if (n <= 0) return 0;
    if (!callback_.IsEmpty()) {
      // MakeCallback runs the microtasks the results resolve, and the
      // process.nextTick() callbacks: what one of those throws is
      // JavaScript's uncaught exception, not a C++ one that would abort.
      try {
        callback_.MakeCallback(Value(), {Napi::Number::New(env, n)});
      } catch (const Napi::Error& e) {
        napi_fatal_exception(env, e.Value());
      }
    }
    return n;
  }

  // After a halt, which may have taken results off the ring while it waited
  // for the calls in flight: no doorbell rings for those.
  Napi::Value ReapNow(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), k_ ? Reap() : 0);
  }

  Napi::Value OnCompletions(const Napi::CallbackInfo& info) {
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    return info.Env().Undefined();
  }

  Napi::Value Alloc(const Napi::CallbackInfo& info) {
    if (!k_) return Napi::Number::New(info.Env(), -1);
    size_t size;
    char* base = static_cast<char*>(lkl_um_window(k_, &size));
    void* p = lkl_um_alloc(k_, static_cast<size_t>(info[0].As<Napi::Number>().Int64Value()));
    return Napi::Number::New(info.Env(), p ? static_cast<char*>(p) - base : -1);
  }

  Napi::Value Free(const Napi::CallbackInfo& info) {
    if (k_) {
      char* base = static_cast<char*>(lkl_um_window(k_, nullptr));
      lkl_um_free(k_, base + info[0].As<Napi::Number>().Int64Value());
    }
    return info.Env().Undefined();
  }

  class HaltWorker : public Napi::AsyncWorker {
   public:
    HaltWorker(Napi::Env env, lkl_um* k, unsigned timeout_ms)
        : AsyncWorker(env), k_(k), timeout_ms_(timeout_ms),
          deferred_(Napi::Promise::Deferred::New(env)) {}
    void Execute() override { status_ = lkl_um_halt(k_, timeout_ms_); }
    void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), status_)); }
    Napi::Promise Promise() { return deferred_.Promise(); }

   private:
    lkl_um* k_;
    unsigned timeout_ms_;
    int status_ = -1;
    Napi::Promise::Deferred deferred_;
  };

  Napi::Value Halt(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!k_) {
      auto d = Napi::Promise::Deferred::New(env);
      d.Resolve(Napi::Number::New(env, -1));
      return d.Promise();
    }
    auto* worker = new HaltWorker(env, k_, info[0].As<Napi::Number>().Uint32Value());
    worker->Queue();
    return worker->Promise();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Release(info.Length() ? info[0].As<Napi::Number>().Uint32Value() : 0);
    return info.Env().Undefined();
  }

  Napi::Value Console(const Napi::CallbackInfo& info) {
    if (!k_) return Napi::String::New(info.Env(), "");
    std::string buf(64 * 1024, '\0');
    size_t n = lkl_um_console(k_, buf.data(), buf.size());
    buf.resize(n);
    return Napi::String::New(info.Env(), buf);
  }

  Napi::Value ExitStatus(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), k_ ? lkl_um_exit_status(k_) : -1);
  }

  // Passes a host fd (a disk image) to the kernel process; returns the
  // token a host call (LKL_UM_CALL_ADD_DISK) names it by.
  Napi::Value SendFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!k_) throw ErrnoError(env, -ESHUTDOWN, "the kernel is closed");
    uint32_t token;
    int err = lkl_um_send_fd(k_, info[0].As<Napi::Number>().Int32Value(), &token);
    if (err) throw ErrnoError(env, err, lkl_um_last_error());
    return Napi::Number::New(env, token);
  }

  Napi::Value InFlight(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), in_flight_);
  }

  Napi::Value Pid(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), k_ ? lkl_um_pid(k_) : -1);
  }

  lkl_um* k_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  uv_idle_t* idle_ = nullptr;
  Napi::FunctionReference callback_;
  Napi::Reference<Napi::Float64Array> completions_;
  unsigned in_flight_ = 0;
  bool spinning_ = false;
  uint64_t spin_ns_ = kDefaultSpinNs;
  uint64_t spin_until_ = 0;
};

Napi::FunctionReference* kernel_class;

class StartWorker : public Napi::AsyncWorker {
 public:
  StartWorker(Napi::Env env, const Napi::Object& options)
      : AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {
    lkl_um_options_init(&opts_);
    kernel_ = options.Get("kernel").As<Napi::String>().Utf8Value();
    opts_.kernel = kernel_.c_str();
    if (options.Has("cmdline") && options.Get("cmdline").IsString()) {
      cmdline_ = options.Get("cmdline").As<Napi::String>().Utf8Value();
      opts_.cmdline = cmdline_.c_str();
    }
    auto number = [&](const char* name, int64_t fallback) {
      Napi::Value v = options.Get(name);
      return v.IsNumber() ? v.As<Napi::Number>().Int64Value() : fallback;
    };
    opts_.memory = static_cast<uint64_t>(number("memory", 0));
    opts_.heap_size = static_cast<uint64_t>(number("heapSize", 0));
    opts_.console_fd = static_cast<int>(number("consoleFd", -1));
    opts_.boot_timeout_ms = static_cast<unsigned>(number("bootTimeoutMs", 0));
    opts_.kernel_poll_us = static_cast<int>(number("kernelPollUs", -1));
    spin_ns_ = static_cast<uint64_t>(number("spinUs", kDefaultSpinNs / 1000)) * 1000;
  }

  void Execute() override {
    err_ = lkl_um_start(&opts_, &k_);
    if (err_) message_ = lkl_um_last_error();
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_) {
      deferred_.Reject(ErrnoError(env, err_, message_).Value());
      return;
    }
    Napi::Object kernel = kernel_class->New(
        {Napi::External<lkl_um>::New(env, k_), Napi::Number::New(env, static_cast<double>(spin_ns_))});
    deferred_.Resolve(kernel);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 private:
  Napi::Promise::Deferred deferred_;
  lkl_um_options opts_;
  std::string kernel_, cmdline_, message_;
  uint64_t spin_ns_;
  lkl_um* k_ = nullptr;
  int err_ = 0;
};

// --- host primitives node:fs lacks ----------------------------------------
//
// Copying files between the host and the kernel faithfully needs a few
// host calls node:fs does not have: extended attributes, times to the
// nanosecond, mknod, SEEK_DATA/SEEK_HOLE.  Each throws an Error with
// errno and code on failure, as node:fs does.

Napi::Error HostError(Napi::Env env, const char* syscall, const std::string& path) {
  int err = errno;
  Napi::Error e = Napi::Error::New(env, std::string(strerror(err)) + ", " + syscall + " '" + path + "'");
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.Set("path", Napi::String::New(env, path));
  return e;
}

// A path from JavaScript: a string (UTF-8), or a Buffer, whose bytes are
// taken as they are (names that are not UTF-8).
static std::string PathArg(const Napi::Value &value) {
  if (value.IsBuffer()) {
    Napi::Buffer<char> bytes = value.As<Napi::Buffer<char>>();
    return std::string(bytes.Data(), bytes.Length());
  }
  return value.As<Napi::String>().Utf8Value();
}

// hostListXattr(path, followLinks) -> string[]
Napi::Value HostListXattr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = PathArg(info[0]);
  bool follow = info[1].ToBoolean();
  std::string buf(4096, '\0');
  for (;;) {
    ssize_t n = follow ? listxattr(path.c_str(), buf.data(), buf.size())
                       : llistxattr(path.c_str(), buf.data(), buf.size());
    if (n < 0 && errno == ERANGE) {
      buf.resize(buf.size() * 16);
      continue;
    }
    if (n < 0 && (errno == ENOTSUP || errno == ENODATA)) n = 0;
    if (n < 0) throw HostError(env, "listxattr", path);
    Napi::Array names = Napi::Array::New(env);
    for (ssize_t at = 0; at < n;) {
      std::string name(buf.data() + at);
      names.Set(names.Length(), name);
      at += name.size() + 1;
    }
    return names;
  }
}

// hostGetXattr(path, name, followLinks) -> Buffer
Napi::Value HostGetXattr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = PathArg(info[0]);
  std::string name = info[1].As<Napi::String>().Utf8Value();
  bool follow = info[2].ToBoolean();
  std::string buf(4096, '\0');
  for (;;) {
    ssize_t n = follow ? getxattr(path.c_str(), name.c_str(), buf.data(), buf.size())
                       : lgetxattr(path.c_str(), name.c_str(), buf.data(), buf.size());
    if (n < 0 && errno == ERANGE) {
      buf.resize(buf.size() * 16);
      continue;
    }
    if (n < 0) throw HostError(env, "getxattr", path);
    return Napi::Buffer<char>::Copy(env, buf.data(), n);
  }
}

// hostSetXattr(path, name, value, followLinks)
Napi::Value HostSetXattr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = PathArg(info[0]);
  std::string name = info[1].As<Napi::String>().Utf8Value();
  Napi::Buffer<char> value = info[2].As<Napi::Buffer<char>>();
  bool follow = info[3].ToBoolean();
  int ret = follow ? setxattr(path.c_str(), name.c_str(), value.Data(), value.Length(), 0)
                   : lsetxattr(path.c_str(), name.c_str(), value.Data(), value.Length(), 0);
  if (ret < 0) throw HostError(env, "setxattr", path);
  return env.Undefined();
}

// hostUtimens(path, atimeNs, mtimeNs, followLinks): bigints, nanoseconds
Napi::Value HostUtimens(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = PathArg(info[0]);
  struct timespec ts[2];
  for (int i = 0; i < 2; i++) {
    bool lossless;
    int64_t ns = info[1 + i].As<Napi::BigInt>().Int64Value(&lossless);
    ts[i].tv_sec = ns / 1000000000;
    ts[i].tv_nsec = ns % 1000000000;
    if (ts[i].tv_nsec < 0) {
      ts[i].tv_sec--;
      ts[i].tv_nsec += 1000000000;
    }
  }
  int flags = info[3].ToBoolean() ? 0 : AT_SYMLINK_NOFOLLOW;
  if (utimensat(AT_FDCWD, path.c_str(), ts, flags) < 0) throw HostError(env, "utimensat", path);
  return env.Undefined();
}

// hostMknod(path, mode, dev)
Napi::Value HostMknod(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = PathArg(info[0]);
  bool lossless;
  dev_t dev = info[2].IsBigInt() ? info[2].As<Napi::BigInt>().Uint64Value(&lossless)
                                 : info[2].As<Napi::Number>().Int64Value();
  if (mknod(path.c_str(), info[1].As<Napi::Number>().Uint32Value(), dev) < 0)
    throw HostError(env, "mknod", path);
  return env.Undefined();
}

// hostSeek(fd, offset, whence) -> offset, or -1 past the last data (ENXIO)
Napi::Value HostSeek(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  off_t at = lseek(info[0].As<Napi::Number>().Int32Value(),
                   info[1].As<Napi::Number>().Int64Value(),
                   info[2].As<Napi::Number>().Int32Value());
  if (at < 0 && errno == ENXIO) return Napi::Number::New(env, -1);
  if (at < 0) throw HostError(env, "lseek", std::to_string(info[0].As<Napi::Number>().Int32Value()));
  return Napi::Number::New(env, static_cast<double>(at));
}

// hostFlock(fd, operation) -> false when LOCK_NB finds it held elsewhere
Napi::Value HostFlock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (flock(fd, info[1].As<Napi::Number>().Int32Value()) == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  throw HostError(env, "flock", std::to_string(fd));
}

// hostLockRange(fd, exclusive, start, length) -> false when another open
// file holds a lock over the range (an open file description lock, so it
// lasts while any process holds the file open, as the kernel process does)
Napi::Value HostLockRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct flock lock = {};
  lock.l_type = info[1].As<Napi::Boolean>().Value() ? F_WRLCK : F_RDLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = info[2].As<Napi::Number>().Int64Value();
  lock.l_len = info[3].As<Napi::Number>().Int64Value();
  if (fcntl(fd, F_OFD_SETLK, &lock) == 0) return Napi::Boolean::New(env, true);
  if (errno == EAGAIN || errno == EACCES) return Napi::Boolean::New(env, false);
  throw HostError(env, "fcntl", std::to_string(fd));
}

// hostCacheKnown(fd) -> whether the host tells what it has cached of fd's
// file (lkl_um/host_cache.h): where it does, a disk reads what it has not
// around it
Napi::Value HostCacheKnown(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), lkl_um_host_cache_known(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Value Start(const Napi::CallbackInfo& info) {
  auto* worker = new StartWorker(info.Env(), info[0].As<Napi::Object>());
  worker->Queue();
  return worker->Promise();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  live_kernels = new std::set<Kernel*>;
  kernel_class = new Napi::FunctionReference(Napi::Persistent(Kernel::Define(env)));
  exports.Set("start", Napi::Function::New(env, Start));
  exports.Set("hostListXattr", Napi::Function::New(env, HostListXattr));
  exports.Set("hostGetXattr", Napi::Function::New(env, HostGetXattr));
  exports.Set("hostSetXattr", Napi::Function::New(env, HostSetXattr));
  exports.Set("hostUtimens", Napi::Function::New(env, HostUtimens));
  exports.Set("hostMknod", Napi::Function::New(env, HostMknod));
  exports.Set("hostSeek", Napi::Function::New(env, HostSeek));
  exports.Set("hostFlock", Napi::Function::New(env, HostFlock));
  exports.Set("hostLockRange", Napi::Function::New(env, HostLockRange));
  exports.Set("hostCacheKnown", Napi::Function::New(env, HostCacheKnown));
  exports.Set("Kernel", kernel_class->Value());
  // When Node exits, every kernel still open sees its client go and halts
  // by itself: sync, unmount, power off.
  napi_add_env_cleanup_hook(
      env,
      [](void*) {
        while (!live_kernels->empty()) (*live_kernels->begin())->Release(0);
      },
      nullptr);
  return exports;
}

}  // namespace

NODE_API_MODULE(lkl_um, Init)
