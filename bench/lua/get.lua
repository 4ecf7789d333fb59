-- GET one credential, cycling through the seeded ids so the whole store is touched.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local ids = {}
for id in string.gmatch(os.getenv("BENCH_IDS"), "[^,]+") do ids[#ids + 1] = id end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/api/v2/credentials/" .. ids[(i % #ids) + 1] .. "/")
end
