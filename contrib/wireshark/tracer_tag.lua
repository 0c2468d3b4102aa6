-- Wireshark dissector for tracer's probe tags (tracer/model/tag.py is the reference).
--
-- ICMP echo tag: the first 16 bytes of the echo payload
--   "TRC1" | kind (1 ping, 2 ike, 3 mtu) | flags | run (u32 BE) | seq (u32 BE) | check (u16 BE)
--   check = (sum of the seven big-endian 16-bit words before it, mod 2^16) xor 0x5A5A
-- IKE tag: the 8-byte IKE initiator SPI
--   0xD7 | kind | run (u32 BE) | seq (low 16 bits, BE)
--
-- A post-dissector: it looks at every "data" field Wireshark found (the echo payload, the
-- packet quoted in an ICMP error, the inner packet of decrypted ESP) and at every IKE
-- initiator SPI, so it sees tags wherever the other dissectors put them.
--
-- Use:  tshark -X lua_script:contrib/wireshark/tracer_tag.lua -r run.pcapng -Y tracer \
--         -T fields -e tracer.kind -e tracer.run -e tracer.seq
-- or copy the file into Wireshark's personal Lua plugins folder (Help > About > Folders).

local tracer = Proto("tracer", "tracer probe tag")

local KINDS = { [1] = "ping", [2] = "ike", [3] = "mtu" }

local f = tracer.fields
f.magic = ProtoField.string("tracer.magic", "Magic")
f.kind = ProtoField.uint8("tracer.kind", "Probe kind", base.DEC, KINDS)
f.flags = ProtoField.uint8("tracer.flags", "Flags", base.HEX)
f.run = ProtoField.uint32("tracer.run", "Run", base.HEX)
f.seq = ProtoField.uint32("tracer.seq", "Sequence", base.DEC)
f.check = ProtoField.uint16("tracer.check", "Check", base.HEX)
f.carrier = ProtoField.string("tracer.carrier", "Carried in")
f.quoted = ProtoField.bool("tracer.quoted", "Quoted in an ICMP error")

local bad_check = ProtoExpert.new("tracer.check.bad", "tracer tag check word does not match",
                                  expert.group.CHECKSUM, expert.severity.WARN)
tracer.experts = { bad_check }

local data_f = Field.new("data.data")
local ispi_f = Field.new("isakmp.ispi")
local icmp_type_f = Field.new("icmp.type")

-- Lua 5.2 (Wireshark <= 4.2) has no ~ operator and 5.4 no bit32: xor by arithmetic.
local function xor16(a, b)
    local r, p = 0, 1
    for _ = 1, 16 do
        local x, y = a % 2, b % 2
        if x ~= y then r = r + p end
        a, b, p = (a - x) / 2, (b - y) / 2, p * 2
    end
    return r
end

local function check_word(range)
    local sum = 0
    for i = 0, 12, 2 do sum = sum + range(i, 2):uint() end
    return xor16(sum % 65536, 0x5A5A)
end

local function is_error(t)
    return t == 3 or t == 4 or t == 5 or t == 11 or t == 12
end

local function label(kind, run, seq)
    return string.format("tracer %s run 0x%08x seq %d", KINDS[kind] or ("kind " .. kind), run, seq)
end

function tracer.dissector(tvb, pinfo, tree)
    local found = {}
    -- The outer ICMP type says whether a tag in the frame is a probe or a quote of one.
    local types = { icmp_type_f() }
    local quoted = #types > 0 and is_error(types[1].value)
    for _, fi in ipairs({ data_f() }) do
        local r = fi.range
        if r ~= nil and r:len() >= 16 and r(0, 4):string() == "TRC1" and r(4, 1):uint() ~= 0 then
            local kind, run, seq = r(4, 1):uint(), r(6, 4):uint(), r(10, 4):uint()
            local t = tree:add(tracer, r(0, 16), "tracer probe tag: " .. label(kind, run, seq))
            t:add(f.magic, r(0, 4))
            t:add(f.kind, r(4, 1))
            t:add(f.flags, r(5, 1))
            t:add(f.run, r(6, 4))
            t:add(f.seq, r(10, 4))
            local c = t:add(f.check, r(14, 2))
            if check_word(r) ~= r(14, 2):uint() then c:add_proto_expert_info(bad_check) end
            t:add(f.carrier, "ICMP echo payload"):set_generated()
            t:add(f.quoted, quoted):set_generated()
            found[#found + 1] = (quoted and "quotes " or "") .. label(kind, run, seq)
        end
    end
    for _, fi in ipairs({ ispi_f() }) do
        local r = fi.range
        if r ~= nil and r:len() == 8 and r(0, 1):uint() == 0xD7 and r(1, 1):uint() ~= 0 then
            local kind, run, seq = r(1, 1):uint(), r(2, 4):uint(), r(6, 2):uint()
            local t = tree:add(tracer, r, "tracer probe tag: " .. label(kind, run, seq))
            t:add(f.kind, r(1, 1))
            t:add(f.run, r(2, 4))
            t:add(f.seq, r(6, 2))
            t:add(f.carrier, "IKE initiator SPI"):set_generated()
            t:add(f.quoted, quoted):set_generated()
            found[#found + 1] = (quoted and "quotes " or "") .. label(kind, run, seq)
        end
    end
    if #found > 0 then
        pinfo.cols.info:append(" [" .. table.concat(found, "; ") .. "]")
    end
end

register_postdissector(tracer)
