-- GET a fixed path (the floor, and a page of the list).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.path = os.getenv("BENCH_PATH")
