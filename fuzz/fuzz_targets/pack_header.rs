//! A pack's header: input is 8 bytes of data-area length (little endian) then the header's
//! plaintext. Whatever it says, the blobs it returns tile the data area exactly.
#![no_main]

use coffer_repo::format::pack;
use coffer_repo::format::sealed::ObjectKind;
use coffer_repo::PackId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = coffer_fuzz::keys();
    let id = PackId([7; 32]);
    // Raw bytes as a whole pack (length suffix, sealed header): refused, never a panic.
    assert!(pack::parse_pack(keys, &id, data).is_err());
    if data.len() < 8 {
        return;
    }
    let (len, plain) = data.split_at(8);
    let data_len = u64::from_le_bytes(len.try_into().expect("8 bytes")) % (1 << 40);
    let header = coffer_fuzz::sealed(ObjectKind::PackHeader, plain);
    if let Ok(blobs) = pack::parse_header(keys, &id, &header, data_len) {
        let mut offset = 0u64;
        for b in &blobs {
            assert_eq!(u64::from(b.offset), offset);
            offset += u64::from(b.length);
        }
        assert_eq!(offset, data_len);
    }
});
